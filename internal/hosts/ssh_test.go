package hosts

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
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

	sshd := StartSSHD(t, h)
	signer, pinned := sshd.Signer, sshd.HostKey
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

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
