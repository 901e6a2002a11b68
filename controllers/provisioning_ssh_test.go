package controllers

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/ssh"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// sshServer is an SSH server in this process that records the commands it is asked
// to run and answers each with exit status 0.
type sshServer struct {
	addr    string
	hostKey ssh.PublicKey
	mu      sync.Mutex
	ran     []string
}

func startSSHServer(t *testing.T, authorized ssh.PublicKey) *sshServer {
	t.Helper()
	_, hostPriv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(hostPriv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		if string(key.Marshal()) != string(authorized.Marshal()) {
			return nil, &ssh.PartialSuccessError{}
		}
		return nil, nil
	}}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	s := &sshServer{addr: ln.Addr().String(), hostKey: hostSigner.PublicKey()}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(conn, cfg)
		}
	}()
	return s
}

func (s *sshServer) serve(conn net.Conn, cfg *ssh.ServerConfig) {
	_, chans, reqs, err := ssh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		ch, requests, err := nc.Accept()
		if err != nil {
			continue
		}
		for req := range requests {
			if req.Type != "exec" {
				_ = req.Reply(false, nil)
				continue
			}
			var payload struct{ Command string }
			_ = ssh.Unmarshal(req.Payload, &payload)
			s.mu.Lock()
			s.ran = append(s.ran, payload.Command)
			s.mu.Unlock()
			_ = req.Reply(true, nil)
			_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
			_ = ch.Close()
		}
	}
}

func TestSSHInstall(t *testing.T) {
	_, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	clientSigner, _ := ssh.NewSignerFromKey(clientPriv)
	block, _ := ssh.MarshalPrivateKey(clientPriv, "")
	keyPEM := pem.EncodeToMemory(block)
	srv := startSSHServer(t, clientSigner.PublicKey())
	host, port, _ := net.SplitHostPort(srv.addr)
	p, _ := net.LookupPort("tcp", port)
	inst := newSSHInstaller()
	job := sshJob{cluster: "edge-1", host: v1alpha1.SSHHost{Address: host, Port: int32(p), User: "root",
		Roles: []v1alpha1.NodeRole{v1alpha1.NodeRoleEtcd, v1alpha1.NodeRoleWorker}, NodeAgentArgs: []string{"--hostname=it's-me"}},
		key: keyPEM, command: "curl -fsSL https://hub/v1/nodes/x/install.sh | sh -s -- --roles etcd,control-plane,worker"}

	// Not pinned: accepted, and the key seen is returned to be recorded.
	seen, err := inst.install(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	if seen != strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.hostKey))) {
		t.Fatalf("seen %q", seen)
	}
	srv.mu.Lock()
	ran := srv.ran[0]
	srv.mu.Unlock()
	for _, want := range []string{"cd /tmp || exit 1; nohup sh -c ", "--roles etcd,worker --address 127.0.0.1", `'\''--hostname=it'\''\'\'''\''s-me'\''`, ">/var/log/drover-node-agent-install.log 2>&1 </dev/null &"} {
		if !strings.Contains(ran, want) {
			t.Errorf("ran %q; want it to contain %q", ran, want)
		}
	}

	// Pinned to the key it has: accepted. Pinned to another: refused, naming both.
	job.pinned = seen
	if _, err := inst.install(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	other, _ := ssh.NewPublicKey(otherPub)
	job.pinned = string(ssh.MarshalAuthorizedKey(other))
	_, err = inst.install(context.Background(), job)
	if err == nil || !strings.Contains(err.Error(), "the host key changed: the host presents "+ssh.FingerprintSHA256(srv.hostKey)+", Drover expects "+ssh.FingerprintSHA256(other)) {
		t.Fatalf("err = %v", err)
	}

	// A key the host does not accept, and one that is not a key.
	_, wrongPriv, _ := ed25519.GenerateKey(rand.Reader)
	wrong, _ := ssh.MarshalPrivateKey(wrongPriv, "")
	job.pinned, job.key = "", pem.EncodeToMemory(wrong)
	if _, err := inst.install(context.Background(), job); err == nil || !strings.Contains(err.Error(), "ssh root@127.0.0.1:") {
		t.Fatalf("err = %v", err)
	}
	job.key = []byte("not a key")
	if _, err := inst.install(context.Background(), job); err == nil || !strings.Contains(err.Error(), "the private key in sshKeySecretRef cannot be read") {
		t.Fatalf("err = %v", err)
	}
}
