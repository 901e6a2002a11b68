// Package hostagent is `drover node-agent`: it joins a host to a cluster Drover
// provisions and keeps it there. It registers with the hub (node token in, ClusterNode
// and a credential of the node's own out), fetches the node's plan over that
// credential (a long poll, so a new plan arrives at once), applies it with the plan
// engine (package nodeagent), and reports what it did.
//
// The credential (a client certificate for a key that never leaves the host) and the
// hub's CA are kept in the data directory; a restarted agent uses them instead of the
// token, and renews the credential when two thirds of its life have passed.
package hostagent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/drover-io/drover/nodeagent"
	"github.com/drover-io/drover/nodeplan"
	"github.com/drover-io/drover/nodes"
	"github.com/drover-io/drover/selfcert"
	"github.com/drover-io/drover/version"
)

// TokenEnv holds the node token when --token is not given (the install script
// uses it, so that the token is not in the process's arguments).
const TokenEnv = "DROVER_NODE_TOKEN"

// Files in the data directory.
const (
	credentialCert = "node.crt"
	credentialKey  = "node.key"
	hubCAFile      = "hub-ca.crt"
)

// Options are `drover node-agent`'s flags.
type Options struct {
	HubURL    string
	Token     string
	HubCAFile string
	Roles     string
	Address   string
	Hostname  string
	DataDir   string
	// KubeletCgroupRoot is recorded in the ClusterNode for kubelet's cgroupRoot.
	KubeletCgroupRoot string
	// Root prefixes every path a plan writes (tests).
	Root string
	Log  zap.Options
}

// BindFlags registers the flags.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.HubURL, "hub-url", "", "URL of the hub server (the manager's --hub-url).")
	fs.StringVar(&o.Token, "token", "", "The cluster's node token (status.provisioning.registrationCommand has it); default $"+TokenEnv+". Needed only until the node has its own credential.")
	fs.StringVar(&o.HubCAFile, "hub-ca-file", "", "PEM CA of the hub server. Default: fetched from the hub and checked against the node token.")
	fs.StringVar(&o.Roles, "roles", "", "Comma-separated roles of this host: etcd, control-plane, worker.")
	fs.StringVar(&o.Address, "address", "", "IP address of this host that the other nodes and the hub reach. Default: the address this host reaches the hub from.")
	fs.StringVar(&o.Hostname, "hostname", "", "Name of this host in the cluster (a DNS label). Default: the host's name.")
	fs.StringVar(&o.DataDir, "data-dir", nodes.DefaultDataDir, "Directory for the node agent's credential, state, downloaded binaries and process logs.")
	fs.StringVar(&o.KubeletCgroupRoot, "kubelet-cgroup-root", "", "Cgroup under which kubelet puts pods on this host (default: the root); for hosts that share a machine.")
	fs.StringVar(&o.Root, "root", "/", "Root directory the plan's files are written under (for tests).")
}

// Main runs `drover node-agent`.
func Main(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("drover node-agent", flag.ContinueOnError)
	var o Options
	o.BindFlags(fs)
	o.Log.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("node-agent: unexpected argument %q", fs.Arg(0))
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.Log)))
	return Run(ctx, o)
}

// agent is a running node agent.
type agent struct {
	o      Options
	log    logr.Logger
	hubURL *url.URL
	roots  *x509.CertPool
	cert   *tls.Certificate
	expiry time.Time
	client *http.Client
	node   string
}

// Run joins the hub (or resumes with the stored credential) and applies the node's
// plan until ctx is done or the credential is revoked.
func Run(ctx context.Context, o Options) error {
	log := ctrl.Log.WithName("node-agent")
	if o.Token == "" {
		o.Token = os.Getenv(TokenEnv)
	}
	u, err := url.Parse(o.HubURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("--hub-url %q: want https://host[:port]", o.HubURL)
	}
	if !filepath.IsAbs(o.DataDir) {
		return fmt.Errorf("--data-dir %q must be an absolute path", o.DataDir)
	}
	if err := os.MkdirAll(o.DataDir, 0o700); err != nil {
		return err
	}
	if o.Hostname == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		o.Hostname = strings.ToLower(strings.SplitN(h, ".", 2)[0])
	}
	if o.Address == "" {
		o.Address, err = localAddress(u)
		if err != nil {
			return fmt.Errorf("cannot tell this host's address (pass --address): %w", err)
		}
	}
	a := &agent{o: o, log: log, hubURL: u}
	if err := a.loadCA(ctx); err != nil {
		return err
	}
	if err := a.ensureCredential(ctx); err != nil {
		return err
	}
	engine, err := nodeagent.New(nodeagent.Options{DataDir: o.DataDir, Root: o.Root, Log: log.WithName("plan"), Fetch: a.fetch})
	if err != nil {
		return err
	}
	log.Info("Node agent running", "node", a.node, "hub", o.HubURL, "address", o.Address, "roles", o.Roles)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	plans := make(chan nodeagent.Signed, 1)
	go a.pollPlans(ctx, cancel, plans)
	go a.report(ctx, engine)
	go a.renew(ctx)
	runErr := engine.Run(ctx, plans)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return runErr
}

// localAddress is the address this host reaches the hub from.
func localAddress(u *url.URL) (string, error) {
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "443")
	}
	c, err := net.Dial("udp", host)
	if err != nil {
		return "", err
	}
	defer func() { _ = c.Close() }()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}

// loadCA reads the hub's CA: from --hub-ca-file, from the data directory, or from the
// hub, checked against the node token.
func (a *agent) loadCA(ctx context.Context) error {
	stored := filepath.Join(a.o.DataDir, hubCAFile)
	var ca []byte
	var err error
	switch {
	case a.o.HubCAFile != "":
		if ca, err = os.ReadFile(a.o.HubCAFile); err != nil {
			return fmt.Errorf("--hub-ca-file: %w", err)
		}
	default:
		if ca, err = os.ReadFile(stored); errors.Is(err, os.ErrNotExist) {
			if ca, err = a.discoverCA(ctx); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return errors.New("the hub's CA holds no PEM certificate")
	}
	a.roots = pool
	if a.o.HubCAFile != stored {
		if err := writeFile(stored, ca, 0o644); err != nil {
			return err
		}
	}
	a.client = a.httpClient()
	return nil
}

// discoverCA fetches the hub's CA without trusting the connection, and trusts it
// only if the hub signed it with the node token, which only the hub knows.
func (a *agent) discoverCA(ctx context.Context) ([]byte, error) {
	if a.o.Token == "" {
		return nil, errors.New("no hub CA: pass --hub-ca-file, or --token (or $" + TokenEnv + ") to fetch it from the hub")
	}
	insecure := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}}} //nolint:gosec // the CA is checked against the token below
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url(nodes.PathPrefix+nodes.ID(a.o.Token)+"/ca"), nil)
	if err != nil {
		return nil, err
	}
	resp, err := insecure.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch the hub's CA: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	ca, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch the hub's CA: %s (is the node token current?)", resp.Status)
	}
	if !nodes.VerifySignature(a.o.Token, ca, resp.Header.Get(nodes.SignatureHeader)) {
		return nil, errors.New("the hub's CA is not signed with the node token: this is not the hub that issued the token, or someone is in between; not trusted")
	}
	return ca, nil
}

func (a *agent) url(p string) string { return strings.TrimSuffix(a.o.HubURL, "/") + p }

func (a *agent) httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: a.roots, MinVersion: tls.VersionTLS12,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if a.cert == nil {
					return &tls.Certificate{}, nil
				}
				return a.cert, nil
			}},
		ResponseHeaderTimeout: 60 * time.Second,
		IdleConnTimeout:       90 * time.Second,
	}}
}

// ensureCredential loads the stored credential, or registers with the token.
func (a *agent) ensureCredential(ctx context.Context) error {
	certPEM, err1 := os.ReadFile(filepath.Join(a.o.DataDir, credentialCert))
	keyPEM, err2 := os.ReadFile(filepath.Join(a.o.DataDir, credentialKey))
	if err1 == nil && err2 == nil {
		if pair, err := tls.X509KeyPair(certPEM, keyPEM); err == nil {
			if leaf, err := x509.ParseCertificate(pair.Certificate[0]); err == nil && time.Now().Before(leaf.NotAfter) {
				a.cert, a.expiry = &pair, leaf.NotAfter
				a.node = strings.TrimPrefix(leaf.Subject.CommonName, "drover-node:")
				// Register again with it: the hub checks the node still exists, and
				// the roles given now are recorded.
				if err := a.register(ctx, ""); err == nil {
					return nil
				} else if !isAuthError(err) {
					return err
				}
				a.log.Info("The stored credential is no longer accepted; registering with the node token")
			}
		}
	}
	a.cert = nil
	if a.o.Token == "" {
		return errors.New("not registered yet: pass --token (or $" + TokenEnv + ")")
	}
	backoff := time.Second
	for {
		err := a.register(ctx, a.o.Token)
		if err == nil || isAuthError(err) || isBadRequest(err) {
			return err
		}
		a.log.Error(err, "Cannot register; retrying", "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.code, http.StatusText(e.code), e.msg)
}

func isAuthError(err error) bool {
	var se *statusError
	return errors.As(err, &se) && (se.code == http.StatusUnauthorized || se.code == http.StatusForbidden)
}

func isBadRequest(err error) bool {
	var se *statusError
	return errors.As(err, &se) && (se.code == http.StatusBadRequest || se.code == http.StatusConflict)
}

// register asks for a credential: with the token, or (token empty) with the current
// credential.
func (a *agent) register(ctx context.Context, token string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: a.o.Hostname}}, key)
	if err != nil {
		return err
	}
	var roles []string
	for _, r := range strings.Split(a.o.Roles, ",") {
		if r = strings.TrimSpace(r); r != "" {
			roles = append(roles, r)
		}
	}
	body, _ := json.Marshal(nodes.RegisterRequest{Token: token, Hostname: a.o.Hostname, Address: a.o.Address, Roles: roles,
		CSR: string(selfcert.PEM("CERTIFICATE REQUEST", csr)), AgentVersion: version.Version, KubeletCgroupRoot: a.o.KubeletCgroupRoot})
	data, err := a.call(ctx, http.MethodPost, nodes.RegisterPath, body)
	if err != nil {
		return err
	}
	var out nodes.RegisterResponse
	if err := json.Unmarshal(data, &out); err != nil {
		return fmt.Errorf("registration answer: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	keyPEM := selfcert.PEM("EC PRIVATE KEY", der)
	pair, err := tls.X509KeyPair([]byte(out.Certificate), keyPEM)
	if err != nil {
		return fmt.Errorf("the hub's credential does not match our key: %w", err)
	}
	if err := writeFile(filepath.Join(a.o.DataDir, credentialKey), keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(a.o.DataDir, credentialCert), []byte(out.Certificate), 0o600); err != nil {
		return err
	}
	a.cert, a.expiry, a.node = &pair, out.NotAfter, out.Node
	// New connections present the new certificate.
	a.client.CloseIdleConnections()
	return nil
}

// renew renews the credential when two thirds of its life have passed.
func (a *agent) renew(ctx context.Context) {
	for {
		life := time.Until(a.expiry)
		wait := max(life/3, time.Minute)
		if life <= 0 {
			wait = time.Minute
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := a.register(ctx, ""); err != nil {
			a.log.Error(err, "Cannot renew the node credential; retrying in a minute")
		} else {
			a.log.Info("Renewed the node credential", "notAfter", a.expiry)
		}
	}
}

// pollPlans long-polls the hub for the node's plan and sends each new one to plans.
// A revoked credential (the ClusterNode deleted) ends the agent.
func (a *agent) pollPlans(ctx context.Context, stop context.CancelCauseFunc, plans chan<- nodeagent.Signed) {
	have := ""
	backoff := time.Second
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.url(nodes.PlanPath)+"?checksum="+url.QueryEscape(have), nil)
		if err != nil {
			return
		}
		resp, err := a.client.Do(req)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Info("Cannot reach the hub; retrying", "error", err.Error(), "in", backoff)
			}
			a.sleep(ctx, &backoff)
			continue
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 2<<20))
		_ = resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusOK:
			var p nodes.PlanResponse
			if err := json.Unmarshal(data, &p); err != nil {
				a.log.Error(err, "The hub's plan answer cannot be read")
				a.sleep(ctx, &backoff)
				continue
			}
			backoff = time.Second
			have = p.Checksum
			select {
			case plans <- nodeagent.Signed{Data: p.Plan, Checksum: p.Checksum}:
			case <-ctx.Done():
				return
			}
		case http.StatusNotModified:
			backoff = time.Second
		case http.StatusForbidden, http.StatusUnauthorized:
			stop(fmt.Errorf("the hub no longer accepts this node (%s): %s; the node agent stops, and what it started with it", resp.Status, strings.TrimSpace(string(data))))
			return
		default:
			a.log.Info("The hub did not give the plan; retrying", "status", resp.Status, "in", backoff)
			a.sleep(ctx, &backoff)
		}
	}
}

func (a *agent) sleep(ctx context.Context, backoff *time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, 30*time.Second)
}

// report sends the engine's status whenever it changes, and once a minute.
func (a *agent) report(ctx context.Context, engine *nodeagent.Agent) {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	var last []byte
	for {
		rep := nodes.StatusReport{Status: engine.Status(), AgentVersion: version.Version, KubernetesVersion: engine.KubernetesVersion()}
		body, _ := json.Marshal(rep)
		if !bytes.Equal(body, last) || last == nil {
			if err := a.send(ctx, body); err != nil {
				if ctx.Err() == nil {
					a.log.Info("Cannot report to the hub; retrying", "error", err.Error())
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(2 * time.Second):
				}
				continue
			}
			last = body
		}
		select {
		case <-ctx.Done():
			return
		case <-engine.Changed():
		case <-tick.C:
			last = nil // once a minute even without change: the hub may have restarted
		}
	}
}

func (a *agent) send(ctx context.Context, body []byte) error {
	_, err := a.call(ctx, http.MethodPut, nodes.StatusPath, body)
	return err
}

// call sends a JSON body to the hub with the node's credential, within 30 s, and
// returns the answer's body; an answer other than 200 or 204 is a *statusError.
func (a *agent) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, a.url(path), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent {
		return nil, &statusError{code: resp.StatusCode, msg: strings.TrimSpace(string(data))}
	}
	return data, nil
}

// fetch downloads an artifact: from its mirror, with the host's trusted CAs (the
// sha256 in the plan is what makes it safe), or from the hub.
func (a *agent) fetch(ctx context.Context, art nodeplan.Artifact, w io.Writer) error {
	name, c, u := art.Name, a.client, a.url(nodes.ArtifactsPrefix+art.Name)
	if art.URL != "" {
		c, u = http.DefaultClient, art.URL
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", name, resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

func writeFile(p string, data []byte, mode os.FileMode) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, p)
}
