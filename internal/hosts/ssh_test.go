package hosts

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// TestSSHIntoHost runs Debian's sshd inside a host and a Go SSH client, with the
// host key pinned, runs a command there, as Drover does for spec.provisioning.sshHosts.
func TestSSHIntoHost(t *testing.T) {
	RequireRoot(t)
	Require(t, "sshd")
	s := NewForTest(t, 1, Options{Names: []string{"ssh-0"}})
	h := s.Hosts[0]

	hostPub, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, clientKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(hostKey, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	// Everything goes into the host's own /etc and /run; the machine's sshd
	// configuration and root's ~/.ssh stay untouched.
	config := fmt.Sprintf(`ListenAddress %s:22
HostKey /etc/ssh/drover_host_ed25519_key
AuthorizedKeysFile /etc/ssh/drover_authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/sshd.pid
`, h.IP)
	files := map[string][]byte{
		"/etc/ssh/drover_host_ed25519_key": pem.EncodeToMemory(block),
		"/etc/ssh/drover_authorized_keys":  ssh.MarshalAuthorizedKey(signer.PublicKey()),
		"/etc/ssh/drover_sshd_config":      []byte(config),
	}
	for p, b := range files {
		if err := h.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.Run(ctx, "mkdir", "-p", "-m", "0755", "/run/sshd"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Start("/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/drover_sshd_config"); err != nil {
		t.Fatal(err)
	}

	addr := net.JoinHostPort(h.IP.String(), "22")
	dial := func(hostKey ssh.PublicKey) (*ssh.Client, error) {
		return ssh.Dial("tcp", addr, &ssh.ClientConfig{
			User:            "root",
			Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.FixedHostKey(hostKey),
			Timeout:         5 * time.Second,
		})
	}
	var client *ssh.Client
	eventually(t, ctx, func() error {
		var err error
		client, err = dial(pinned)
		return err
	})
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	out, err := session.CombinedOutput("hostname; cat /etc/hostname; grep :memory: /proc/self/cgroup")
	session.Close()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := fmt.Sprintf("%s\n%s\n", h.Name, h.Name)
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), ":memory:"+h.Cgroup()) {
		t.Errorf("the command ran elsewhere than in %s: %q", h.Name, out)
	}

	// A host key other than the pinned one is refused.
	otherPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ssh.NewPublicKey(otherPub)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := dial(other); err == nil {
		c.Close()
		t.Error("a connection with the wrong pinned host key succeeded")
	} else if !strings.Contains(err.Error(), "host key mismatch") {
		t.Errorf("wrong host key: %v, want a host key mismatch", err)
	}
}
