package nodeplan

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func valid() *Plan {
	return &Plan{
		Files: []File{{Path: "/etc/kubernetes/pki/ca.crt", Content: []byte("pem"), Mode: 0o644}},
		Instructions: []Instruction{{Name: "join-etcd", Command: Command{Path: "/usr/local/bin/etcdctl", Args: []string{"member", "add"}},
			Timeout: Duration{30 * time.Second}}},
		Processes: []Process{{Name: "etcd", Command: Command{Path: "/usr/local/bin/etcd", Env: []string{"ETCD_NAME=a"}}}},
		Probes: []Probe{{Name: "etcd", HTTPGet: &HTTPGet{URL: "https://127.0.0.1:2379/health", CAFile: "/etc/kubernetes/pki/etcd/ca.crt"}},
			{Name: "kubelet", Exec: &Command{Path: "true"}, Period: Duration{5 * time.Second}}},
	}
}

func TestEncodeVerifyRoundTrip(t *testing.T) {
	b, sum, err := Encode(valid())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Verify(b, sum)
	if err != nil {
		t.Fatal(err)
	}
	if p.Instructions[0].Timeout.Duration != 30*time.Second || p.Processes[0].Env[0] != "ETCD_NAME=a" {
		t.Fatalf("round trip lost data: %+v", p)
	}
	// One byte changed, or a checksum from another plan: never applied.
	tampered := append([]byte(nil), b...)
	tampered[len(tampered)-2] = ' '
	if _, err := Verify(tampered, sum); !errors.Is(err, ErrChecksum) {
		t.Fatalf("tampered plan: %v", err)
	}
	if _, err := Verify(b, Checksum([]byte("{}"))); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong checksum: %v", err)
	}
}

func TestDecodeRefusesUnknownFieldsAndTrailingData(t *testing.T) {
	for _, in := range []string{`{"files":[],"sneaky":1}`, `{} {}`, `[]`, `{"probes":[{"name":"x","httpGet":{"url":"http://a"},"period":10}]}`} {
		if _, err := Decode([]byte(in)); err == nil {
			t.Errorf("Decode(%s) accepted", in)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*Plan)
		want   string
	}{
		{"valid", func(*Plan) {}, ""},
		{"relative file", func(p *Plan) { p.Files[0].Path = "etc/x" }, `files[0].path: "etc/x" must be absolute`},
		{"escaping file", func(p *Plan) { p.Files[0].Path = "/etc/../root/.ssh/authorized_keys" }, `files[0].path: "/etc/../root/.ssh/authorized_keys" must be clean`},
		{"root", func(p *Plan) { p.Files[0].Path = "/" }, `files[0].path: "/" must be clean`},
		{"twice", func(p *Plan) { p.Files = append(p.Files, p.Files[0]) }, `files[1].path: "/etc/kubernetes/pki/ca.crt" is written twice`},
		{"mode", func(p *Plan) { p.Files[0].Mode = 0o10000 }, `files[0].mode`},
		{"bad name", func(p *Plan) { p.Processes[0].Name = "Etcd!" }, `processes[0].name: "Etcd!" must be a DNS label`},
		{"same name", func(p *Plan) { p.Processes = append(p.Processes, p.Processes[0]) }, `processes[1].name: "etcd" is also processes[0]`},
		{"same name, other kinds", func(p *Plan) { p.Instructions[0].Name = "etcd" }, ""},
		{"relative command", func(p *Plan) { p.Processes[0].Path = "bin/etcd" }, `processes[0].path: "bin/etcd" must be absolute`},
		{"bad env", func(p *Plan) { p.Processes[0].Env = []string{"=x"} }, `processes[0].env[0]: want NAME=value`},
		{"nul", func(p *Plan) { p.Processes[0].Args = []string{"a\x00b"} }, `processes[0]: contains a NUL byte`},
		{"probe both", func(p *Plan) { p.Probes[0].Exec = &Command{Path: "true"} }, `probes[0]: set exactly one of httpGet and exec`},
		{"probe url", func(p *Plan) { p.Probes[0].HTTPGet.URL = "file:///etc/shadow" }, `probes[0].httpGet.url`},
		{"probe cert without key", func(p *Plan) { p.Probes[0].HTTPGet.CertFile = "/a" }, `probes[0].httpGet: set both certFile and keyFile`},
		{"probe too often", func(p *Plan) { p.Probes[1].Period = Duration{time.Millisecond} }, `probes[1].period: at least 1s`},
		{"timeout", func(p *Plan) { p.Instructions[0].Timeout = Duration{time.Hour} }, `instructions[0].timeout`},
		{"too many", func(p *Plan) { p.Files = make([]File, MaxFiles+1) }, `at most 256 files`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := valid()
			tc.change(p)
			err := p.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err = %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

// Instructions run again exactly when their content changes.
func TestInstructionKey(t *testing.T) {
	in := valid().Instructions[0]
	k := InstructionKey(in)
	same := in
	if InstructionKey(same) != k {
		t.Fatal("same content, other key")
	}
	in.Args = append([]string{}, "member", "add", "--peer-urls=x")
	if InstructionKey(in) == k {
		t.Fatal("changed content, same key")
	}
	if !strings.HasPrefix(k, "join-etcd-") {
		t.Fatalf("key %q does not name its instruction", k)
	}
}

// FuzzDecode: any input either decodes into a plan that validates and encodes again,
// or is refused; it never panics.
func FuzzDecode(f *testing.F) {
	b, _, _ := Encode(valid())
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"files":[{"path":"/a/../b","content":"eA=="}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Decode(data)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("decoded plan does not validate: %v", err)
		}
		out, sum, err := Encode(p)
		if err != nil && len(data) <= MaxPlanBytes/2 {
			t.Fatalf("a decoded plan does not encode: %v", err)
		}
		if err == nil {
			if _, err := Verify(out, sum); err != nil {
				t.Fatalf("an encoded plan does not verify: %v", err)
			}
		}
	})
}
