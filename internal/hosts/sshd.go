package hosts

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"testing"

	"golang.org/x/crypto/ssh"
)

// SSHD is Debian's sshd running in a host, for root with a key of its own.
type SSHD struct {
	// HostKey is the key sshd presents; ClientKey (PEM) is root's, which it accepts,
	// and Signer the same key for Go's SSH client.
	HostKey   ssh.PublicKey
	ClientKey []byte
	Signer    ssh.Signer
}

// StartSSHD runs sshd in h on port 22, its configuration, host key and root's
// authorized key in the host's own /etc and /run (the machine's sshd configuration
// and root's ~/.ssh stay untouched). It needs openssh-server (Require(t, "sshd")).
func StartSSHD(t testing.TB, h *Host) *SSHD {
	t.Helper()
	hostPub, hostKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, clientKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostPEM, err := ssh.MarshalPrivateKey(hostKey, "")
	if err != nil {
		t.Fatal(err)
	}
	clientPEM, err := ssh.MarshalPrivateKey(clientKey, "")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(clientKey)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`ListenAddress %s:22
HostKey /etc/ssh/drover_host_ed25519_key
AuthorizedKeysFile /etc/ssh/drover_authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile /run/sshd.pid
`, h.IP)
	for p, b := range map[string][]byte{
		"/etc/ssh/drover_host_ed25519_key": pem.EncodeToMemory(hostPEM),
		"/etc/ssh/drover_authorized_keys":  ssh.MarshalAuthorizedKey(signer.PublicKey()),
		"/etc/ssh/drover_sshd_config":      []byte(config),
	} {
		if err := h.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := h.Run(context.Background(), "mkdir", "-p", "-m", "0755", "/run/sshd"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := h.Start("/usr/sbin/sshd", "-D", "-e", "-f", "/etc/ssh/drover_sshd_config"); err != nil {
		t.Fatal(err)
	}
	return &SSHD{HostKey: pub, ClientKey: pem.EncodeToMemory(clientPEM), Signer: signer}
}
