package controllers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
)

// sshTimeout bounds one installation over SSH: dialling, the handshake and starting
// the install script (which then runs on by itself).
const sshTimeout = time.Minute

// sshInstaller installs the node agent on spec.provisioning.sshHosts, one goroutine
// per host and attempt, off the controller's workers, so that a host that does not
// answer delays no other cluster. Failed attempts are retried with backoff (30 s,
// doubling to 10 min); when an attempt ends, the cluster is reconciled again.
type sshInstaller struct {
	mu       sync.Mutex
	attempts map[string]*sshAttempt // <cluster>/<address>
	events   chan event.GenericEvent
	dial     func(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error)
}

type sshAttempt struct {
	running bool
	err     string
	next    time.Time
	backoff time.Duration
	// seen is the host key the host presented (authorized_keys format), to record
	// when no key was pinned.
	seen string
}

func newSSHInstaller() *sshInstaller {
	return &sshInstaller{attempts: map[string]*sshAttempt{}, events: make(chan event.GenericEvent, 64),
		dial: func(ctx context.Context, addr string, cfg *ssh.ClientConfig) (*ssh.Client, error) {
			d := net.Dialer{Timeout: cfg.Timeout}
			conn, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
			if err != nil {
				_ = conn.Close()
				return nil, err
			}
			return ssh.NewClient(c, chans, reqs), nil
		}}
}

// forget drops a cluster's attempts.
func (s *sshInstaller) forget(cluster string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.attempts {
		if strings.HasPrefix(k, cluster+"/") {
			delete(s.attempts, k)
		}
	}
}

// sshJob is what one attempt needs, read by Reconcile.
type sshJob struct {
	cluster string
	index   int
	host    v1alpha1.SSHHost
	key     []byte
	// pinned is the host key to require (spec, or recorded in status); empty
	// accepts the first one and records it.
	pinned  string
	command string
}

// reconcileSSH starts the installations that are due and reports, for status, the
// host keys seen first and what failed.
func (r *ProvisioningReconciler) reconcileSSH(ctx context.Context, mc *v1alpha1.ManagedCluster, status *v1alpha1.ProvisioningStatus, registered map[string]bool) []string {
	s := r.ssh
	var problems []string
	for i, h := range mc.Spec.Provisioning.SSHHosts {
		key := mc.Name + "/" + h.Address
		field := fmt.Sprintf("spec.provisioning.sshHosts[%d] (%s)", i, h.Address)
		s.mu.Lock()
		a := s.attempts[key]
		if a == nil {
			a = &sshAttempt{backoff: 30 * time.Second}
			s.attempts[key] = a
		}
		// Record the key seen first, for hosts without a pinned one.
		if a.seen != "" && h.HostKey == "" && recordedKey(status, h.Address) == "" {
			status.SSHHostKeys = append(status.SSHHostKeys, v1alpha1.SSHHostKey{Address: h.Address, Key: a.seen})
			r.Recorder.Eventf(mc, nil, corev1.EventTypeNormal, "SSHHostKeyRecorded", "Install",
				"%s presented host key %s, now recorded in status.provisioning.sshHostKeys and required from now on", field, fingerprint(a.seen))
		}
		running, failed, due := a.running, a.err, !time.Now().Before(a.next)
		s.mu.Unlock()
		if registered[h.Address] {
			continue
		}
		if failed != "" {
			problems = append(problems, field+": "+failed)
		}
		if running || !due {
			continue
		}
		job := sshJob{cluster: mc.Name, index: i, host: h, pinned: h.HostKey, command: status.RegistrationCommand}
		if job.pinned == "" {
			job.pinned = recordedKey(status, h.Address)
		}
		ref := h.SSHKeySecretRef
		var sec corev1.Secret
		if err := r.Client.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: ref.Name}, &sec); err != nil {
			problems = append(problems, fmt.Sprintf("%s: cannot read secret %s/%s: %v", field, r.Namespace, ref.Name, client.IgnoreNotFound(err)))
			continue
		}
		if job.key = sec.Data[ref.KeyOrDefault()]; len(job.key) == 0 {
			problems = append(problems, fmt.Sprintf("%s: secret %s/%s has no key '%s' with a private key", field, r.Namespace, ref.Name, ref.KeyOrDefault()))
			continue
		}
		s.mu.Lock()
		a.running = true
		s.mu.Unlock()
		go s.run(job, a, mc)
	}
	return problems
}

func recordedKey(status *v1alpha1.ProvisioningStatus, address string) string {
	for _, k := range status.SSHHostKeys {
		if k.Address == address {
			return k.Key
		}
	}
	return ""
}

func fingerprint(authorizedKey string) string {
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(authorizedKey))
	if err != nil {
		return "(unreadable key)"
	}
	return ssh.FingerprintSHA256(pub)
}

// run makes one attempt, then asks for the cluster to be reconciled.
func (s *sshInstaller) run(job sshJob, a *sshAttempt, mc *v1alpha1.ManagedCluster) {
	ctx, cancel := context.WithTimeout(context.Background(), sshTimeout)
	defer cancel()
	seen, err := s.install(ctx, job)
	log := ctrl.Log.WithName("provisioning").WithValues("ManagedCluster", job.cluster, "host", job.host.Address)
	if err != nil {
		log.Info("Installing the node agent over SSH failed; retrying later", "error", err.Error())
	} else {
		log.Info("Started the node agent's installation over SSH", "hostKey", fingerprint(seen))
	}
	s.mu.Lock()
	a.running = false
	if seen != "" {
		a.seen = seen
	}
	if err != nil {
		a.err = err.Error()
		a.next = time.Now().Add(a.backoff)
		a.backoff = min(2*a.backoff, 10*time.Minute)
	} else {
		a.err, a.backoff = "", 30*time.Second
		// Started: give the node agent time to register before trying again.
		a.next = time.Now().Add(2 * time.Minute)
	}
	s.mu.Unlock()
	select {
	case s.events <- event.GenericEvent{Object: mc}:
	default:
	}
}

// install starts the registration command on the host over SSH, in the background
// (without systemd the install script runs the node agent in the foreground).
func (s *sshInstaller) install(ctx context.Context, job sshJob) (string, error) {
	signer, err := ssh.ParsePrivateKey(job.key)
	if err != nil {
		return "", fmt.Errorf("the private key in sshKeySecretRef cannot be read: %w", err)
	}
	var pinned ssh.PublicKey
	if job.pinned != "" {
		if pinned, _, _, _, err = ssh.ParseAuthorizedKey([]byte(job.pinned)); err != nil {
			return "", fmt.Errorf("hostKey %q is not a public key in authorized_keys format: %w", job.pinned, err)
		}
	}
	var seen string
	port := int(job.host.Port)
	if port == 0 {
		port = 22
	}
	cfg := &ssh.ClientConfig{
		User:    job.host.User,
		Auth:    []ssh.AuthMethod{ssh.PublicKeys(signer)},
		Timeout: 15 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, key ssh.PublicKey) error {
			seen = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
			if pinned != nil && string(pinned.Marshal()) != string(key.Marshal()) {
				return fmt.Errorf("the host key changed: the host presents %s, Drover expects %s; if the host was rebuilt, set hostKey to its new key",
					ssh.FingerprintSHA256(key), ssh.FingerprintSHA256(pinned))
			}
			return nil
		},
	}
	c, err := s.dial(ctx, net.JoinHostPort(job.host.Address, strconv.Itoa(port)), cfg)
	if err != nil {
		if strings.Contains(err.Error(), "host key changed") {
			return "", errors.New(strings.TrimPrefix(err.Error(), "ssh: handshake failed: "))
		}
		return seen, fmt.Errorf("ssh %s@%s:%d: %w", job.host.User, job.host.Address, port, err)
	}
	defer func() { _ = c.Close() }()
	sess, err := c.NewSession()
	if err != nil {
		return seen, err
	}
	defer func() { _ = sess.Close() }()
	roles := make([]string, 0, len(job.host.Roles))
	for _, r := range job.host.Roles {
		roles = append(roles, string(r))
	}
	cmd := strings.Replace(job.command, "--roles etcd,control-plane,worker", "--roles "+strings.Join(roles, ","), 1)
	if net.ParseIP(job.host.Address) != nil {
		cmd += " --address " + job.host.Address
	}
	for _, arg := range job.host.NodeAgentArgs {
		cmd += " " + shellQuote(arg)
	}
	if job.host.User != "root" {
		cmd = "sudo -n sh -c " + shellQuote(cmd)
	}
	// In the background, its output in a file on the host: the SSH session ends at
	// once, and the node agent (or its systemd unit) runs on.
	// (Not "cd && nohup ... &", which backgrounds a subshell that keeps the
	// session's output open, and so the session, for as long as the agent runs.)
	remote := "cd /tmp || exit 1; nohup sh -c " + shellQuote(cmd) + " >/var/log/drover-node-agent-install.log 2>&1 </dev/null &"
	if out, err := sess.CombinedOutput(remote); err != nil {
		return seen, fmt.Errorf("starting the install script failed: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return seen, nil
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
