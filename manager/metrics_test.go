package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/controlplane"
)

// TestMetrics scrapes the metrics endpoint of a running manager: per-cluster series
// carry the ManagedCluster's name (never the target's IP:port), a failing sync is
// counted for its cluster, every metric the shipped Grafana dashboard queries exists,
// and a deleted cluster's or intent's series go with it.
func TestMetrics(t *testing.T) {
	if os.Getenv(controlplane.AssetsEnv) == "" {
		t.Skipf("%s is not set; run hack/kubebin.sh (make test does it for you)", controlplane.AssetsEnv)
	}
	g := NewWithT(t)
	ctx := context.Background()
	metricsAddr := freeAddr(t)
	hub := startHub(t, "metrics-hub", "--metrics-bind-address="+metricsAddr)
	target, err := controlplane.Start(controlplane.Options{Name: "metrics-target"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Stop() })
	scheme, _ := Scheme()
	tc, err := client.New(target.Config, client.Options{Scheme: scheme})
	g.Expect(err).NotTo(HaveOccurred())
	targetURL, err := url.Parse(target.Config.Host)
	g.Expect(err).NotTo(HaveOccurred())

	const cluster = "metrics-1"
	g.Expect(hub.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: DefaultNamespace, Name: cluster + "-kubeconfig"},
		Data: map[string][]byte{"value": target.Kubeconfig()}})).To(Succeed())
	g.Expect(hub.c.Create(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: cluster},
		Spec: v1alpha1.ManagedClusterSpec{Kubeconfig: &v1alpha1.KubeconfigSource{SecretRef: v1alpha1.SecretKeyReference{Name: cluster + "-kubeconfig"}}}})).To(Succeed())
	g.Eventually(func(g Gomega) {
		mc := getMC(g, hub.c, cluster)
		g.Expect(findCond(mc.Status.Conditions, v1alpha1.ReadyCondition)).To(HaveField("Status", metav1.ConditionTrue))
	}, 30*time.Second, 100*time.Millisecond).Should(Succeed())

	// An intent that holds, created once the cluster is synced: its propagation is measured.
	binding := &v1alpha1.AccessBinding{ObjectMeta: metav1.ObjectMeta{Name: "metrics-viewers"}, Spec: v1alpha1.AccessBindingSpec{
		Subjects: []v1alpha1.Subject{{Kind: "User", Name: "alice@example.com"}},
		RoleRef:  v1alpha1.RoleRef{Kind: v1alpha1.RoleRefClusterRole, Name: "view"},
		Clusters: &v1alpha1.ClusterSelection{Names: []string{cluster}},
	}}
	g.Expect(hub.c.Create(ctx, binding)).To(Succeed())
	// A namespace that exists without adopt: true: the sync fails for it, again and again.
	g.Expect(tc.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}})).To(Succeed())
	g.Expect(hub.c.Create(ctx, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "metrics-legacy"}, Spec: v1alpha1.ClusterProjectSpec{
		Clusters:   v1alpha1.ClusterSelection{Names: []string{cluster}},
		Namespaces: []v1alpha1.ProjectNamespace{{Name: "legacy"}},
	}})).To(Succeed())

	metricsURL := "http://" + metricsAddr + "/metrics"
	var families map[string]*dto.MetricFamily
	g.Eventually(func(g Gomega) {
		families = scrape(g, metricsURL)
		c := map[string]string{"cluster": cluster}
		g.Expect(value(families, "drover_managedcluster_connected", c)).To(Equal(1.0))
		g.Expect(value(families, "drover_managedcluster_ready", c)).To(Equal(1.0))
		g.Expect(value(families, "drover_managedcluster_agent_ready", c)).To(Equal(0.0), "no agent runs in this test")
		g.Expect(value(families, "drover_managedcluster_stalled", c)).To(Equal(0.0))
		g.Expect(value(families, "drover_cluster_sync_duration_seconds", c)).To(BeNumerically(">", 0), "sync count")
		g.Expect(value(families, "drover_cluster_probe_duration_seconds", c)).To(BeNumerically(">", 0), "probe count")
		g.Expect(value(families, "drover_intent_propagation_seconds", c)).To(BeNumerically(">", 0), "propagation count")
		g.Expect(value(families, "drover_cluster_request_duration_seconds", c)).To(BeNumerically(">", 0), "request count")
		g.Expect(value(families, "drover_cluster_requests_total", map[string]string{"cluster": cluster, "method": "GET", "code": "200"})).To(BeNumerically(">", 0))
		// The project's conflict is a failed sync of this cluster, counted for it.
		g.Expect(value(families, "drover_cluster_sync_errors_total", map[string]string{"cluster": cluster, "reason": v1alpha1.ReasonConflict})).To(BeNumerically(">", 0))
		g.Expect(value(families, "drover_managedcluster_reconcile_errors_total", c)).To(BeNumerically(">", 0))
		ab := map[string]string{"kind": "AccessBinding", "name": binding.Name}
		g.Expect(value(families, "drover_intent_ready", ab)).To(Equal(1.0))
		g.Expect(value(families, "drover_intent_clusters", map[string]string{"kind": "AccessBinding", "name": binding.Name, "state": "held"})).To(Equal(1.0))
		p := map[string]string{"kind": "ClusterProject", "name": "metrics-legacy"}
		g.Expect(value(families, "drover_intent_stalled", p)).To(Equal(1.0))
		g.Expect(value(families, "drover_intent_ready", p)).To(Equal(0.0))
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())

	t.Run("targets are never labelled by IP:port", func(t *testing.T) {
		g := NewWithT(t)
		for name, f := range families {
			if name == "rest_client_requests_total" {
				continue // this test's own client counts there; see below
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					g.Expect(l.GetValue()).NotTo(Equal(targetURL.Host), "%s{%s=%q}", name, l.GetName(), l.GetValue())
				}
			}
		}
		// client-go's counter is shared by every client in the process; the
		// manager probes the target every 2 s, and none of that counts there.
		byHost := func(fs map[string]*dto.MetricFamily) float64 {
			sum := 0.0
			for _, m := range fs["rest_client_requests_total"].GetMetric() {
				if hasLabels(m, map[string]string{"host": targetURL.Host}) {
					sum += m.GetCounter().GetValue()
				}
			}
			return sum
		}
		before := byHost(scrape(g, metricsURL))
		probes := value(scrape(g, metricsURL), "drover_cluster_probe_duration_seconds", map[string]string{"cluster": cluster})
		time.Sleep(5 * time.Second)
		after := scrape(g, metricsURL)
		g.Expect(value(after, "drover_cluster_probe_duration_seconds", map[string]string{"cluster": cluster})).To(BeNumerically(">", probes))
		g.Expect(byHost(after)).To(Equal(before), "the manager's requests to the target are counted by host")
	})

	t.Run("every metric the Grafana dashboard and the alerts query exists", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(registered("drover_no_such_metric")).To(BeFalse())
		queried := append(dashboardMetrics(t, filepath.Join("..", "config", "grafana", "drover-dashboard.json")),
			alertMetrics(t, filepath.Join("..", "config", "prometheus", "alerts", "alerts.yaml"))...)
		for _, name := range queried {
			base := name
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				if trimmed, ok := strings.CutSuffix(name, suffix); ok && families[trimmed] != nil {
					base = trimmed
				}
			}
			if families[base] == nil {
				// A vector with no series yet (no tunnel, no proxy request in this
				// test) is not on the endpoint; it must still be registered.
				g.Expect(registered(base)).To(BeTrue(), "the dashboard queries %s, which is not registered", name)
			}
		}
	})

	t.Run("a deleted cluster's and intent's series go", func(t *testing.T) {
		g := NewWithT(t)
		g.Expect(hub.c.Delete(ctx, &v1alpha1.ClusterProject{ObjectMeta: metav1.ObjectMeta{Name: "metrics-legacy"}})).To(Succeed())
		g.Expect(hub.c.Delete(ctx, binding)).To(Succeed())
		g.Expect(hub.c.Delete(ctx, &v1alpha1.ManagedCluster{ObjectMeta: metav1.ObjectMeta{Name: cluster}})).To(Succeed())
		g.Eventually(func() bool {
			return apierrors.IsNotFound(hub.c.Get(ctx, client.ObjectKey{Name: cluster}, &v1alpha1.ManagedCluster{}))
		}, 30*time.Second, 100*time.Millisecond).Should(BeTrue())
		g.Eventually(func(g Gomega) {
			left := seriesWith(scrape(g, metricsURL), func(l map[string]string) bool {
				return l["cluster"] == cluster || l["name"] == binding.Name || l["name"] == "metrics-legacy"
			})
			g.Expect(left).To(BeEmpty())
		}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
	})
}

func scrape(g Gomega, url string) map[string]*dto.MetricFamily {
	resp, err := http.Get(url) //nolint:noctx // a test against a local endpoint
	g.Expect(err).NotTo(HaveOccurred())
	defer func() { _ = resp.Body.Close() }()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	return families
}

// value returns the value of the series of family name whose labels include want:
// a gauge's or counter's value, or a histogram's sample count. It is -1 when there
// is no such series.
func value(families map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := families[name]
	if f == nil {
		return -1
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch {
		case m.Gauge != nil:
			return m.GetGauge().GetValue()
		case m.Counter != nil:
			return m.GetCounter().GetValue()
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount())
		}
	}
	return -1
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

func seriesWith(families map[string]*dto.MetricFamily, match func(map[string]string) bool) []string {
	var out []string
	for name, f := range families {
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if match(l) {
				out = append(out, fmt.Sprintf("%s%v", name, l))
			}
		}
	}
	sort.Strings(out)
	return out
}

// registered tells whether controller-runtime's registry has a metric of that name:
// registering another collector under the name fails if it has.
func registered(name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "a probe of the dashboard test"})
	if err := ctrlmetrics.Registry.Register(probe); err != nil {
		return true
	}
	ctrlmetrics.Registry.Unregister(probe)
	return false
}

// alertMetrics lists the metric names the PrometheusRule's expressions use.
func alertMetrics(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec struct {
			Groups []struct {
				Rules []struct {
					Alert string `json:"alert"`
					Expr  string `json:"expr"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &rule); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var exprs []string
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Expr == "" {
				t.Errorf("%s: a rule without alert or expr: %+v", path, r)
			}
			exprs = append(exprs, r.Expr)
		}
	}
	return metricNames(t, path, exprs)
}

// dashboardMetrics lists the metric names the dashboard's queries use.
func dashboardMetrics(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s is not valid JSON: %v", path, err)
	}
	var exprs []string
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	return metricNames(t, path, exprs)
}

// metricNames lists the metric names in PromQL expressions.
func metricNames(t *testing.T, path string, exprs []string) []string {
	t.Helper()
	name := regexp.MustCompile(`\b(drover_|controller_runtime_|workqueue_|rest_client_)[a-zA-Z0-9_]+`)
	seen := map[string]bool{}
	for _, e := range exprs {
		for _, n := range name.FindAllString(e, -1) {
			seen[n] = true
		}
	}
	if len(seen) == 0 {
		t.Fatalf("%s queries no metric", path)
	}
	out := make([]string, 0, len(seen))
	for n := range seen {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
