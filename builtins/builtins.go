// Package builtins creates Drover's built-in RoleTemplates (config/roletemplates) on a
// hub, so that an installation in one pass (dist/install.yaml, the Helm chart, a
// GitOps sync of either) ends up with them, although a RoleTemplate cannot be applied
// in the same pass as the CRD that defines it.
//
// The manager does it once, with --install-builtin-roletemplates, and only ever
// creates: it never updates a RoleTemplate, so edits and GitOps-managed copies of the
// built-ins stay as their owners wrote them, and it never recreates one it created
// before, so a built-in that someone deleted stays deleted. It remembers what it
// created in ConfigMap <namespace>/drover-builtin-roletemplates.
package builtins

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/drover-io/drover/api/v1alpha1"
	"github.com/drover-io/drover/config/roletemplates"
)

// Creating a RoleTemplate that grants everything (cluster-owner) needs the verb
// escalate on roletemplates (docs/admission.md).
// +kubebuilder:rbac:groups=management.drover.io,resources=roletemplates,verbs=create;escalate

// RecordName is the ConfigMap, in the operator namespace, that names every built-in
// RoleTemplate this hub has held: one key per RoleTemplate.
const RecordName = "drover-builtin-roletemplates"

// RoleTemplates returns the built-in RoleTemplates, each after the ones it inherits.
func RoleTemplates() ([]v1alpha1.RoleTemplate, error) {
	var out []v1alpha1.RoleTemplate
	err := fs.WalkDir(roletemplates.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := roletemplates.FS.ReadFile(path)
		if err != nil {
			return err
		}
		dec := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := dec.Read()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if meta.Kind != "RoleTemplate" {
				continue
			}
			var t v1alpha1.RoleTemplate
			if err := yaml.UnmarshalStrict(doc, &t); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			out = append(out, t)
		}
	})
	if err != nil {
		return nil, err
	}
	return inheritedFirst(out)
}

// inheritedFirst orders templates so that each comes after those it inherits that
// are among them: the admission webhook refuses a template that inherits one that
// does not exist yet.
func inheritedFirst(ts []v1alpha1.RoleTemplate) ([]v1alpha1.RoleTemplate, error) {
	slices.SortFunc(ts, func(a, b v1alpha1.RoleTemplate) int { return strings.Compare(a.Name, b.Name) })
	byName := map[string]v1alpha1.RoleTemplate{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var out []v1alpha1.RoleTemplate
	var visit func(name string) error
	visit = func(name string) error {
		t, ok := byName[name]
		if !ok || state[name] == done {
			return nil
		}
		if state[name] == visiting {
			return fmt.Errorf("built-in RoleTemplate %s inherits itself", name)
		}
		state[name] = visiting
		for _, in := range t.Spec.Inherits {
			if err := visit(in); err != nil {
				return err
			}
		}
		state[name] = done
		out = append(out, t)
		return nil
	}
	for _, t := range ts {
		if err := visit(t.Name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Install creates every built-in RoleTemplate that this hub has never held, and
// records them in ConfigMap <namespace>/RecordName. A RoleTemplate that exists already
// is recorded and left alone. It returns the names it created.
func Install(ctx context.Context, r client.Reader, w client.Writer, namespace string) ([]string, error) {
	ts, err := RoleTemplates()
	if err != nil {
		return nil, err
	}
	record := &corev1.ConfigMap{}
	err = r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: RecordName}, record)
	exists := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("read ConfigMap %s/%s: %w", namespace, RecordName, err)
	}
	if !exists {
		record = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: RecordName,
			Labels: map[string]string{"app.kubernetes.io/name": "drover", "app.kubernetes.io/managed-by": "drover"},
			Annotations: map[string]string{"drover.io/description": "The built-in RoleTemplates this hub has held. " +
				"The manager creates a built-in only when it is not listed here, so one you delete stays deleted; " +
				"remove its key to have it created again."}}}
	}
	if record.Data == nil {
		record.Data = map[string]string{}
	}
	var created []string
	changed := false
	for _, t := range ts {
		if _, ok := record.Data[t.Name]; ok {
			continue
		}
		t := t
		how := "created"
		if err := w.Create(ctx, &t); apierrors.IsAlreadyExists(err) {
			how = "found"
		} else if err != nil {
			// Record what was done so far, so that a retry does not recreate it.
			if changed {
				_ = writeRecord(ctx, w, record, exists)
			}
			return created, fmt.Errorf("create RoleTemplate %s: %w", t.Name, err)
		} else {
			created = append(created, t.Name)
		}
		record.Data[t.Name] = how + " " + time.Now().UTC().Format(time.RFC3339)
		changed = true
	}
	if changed || !exists {
		if err := writeRecord(ctx, w, record, exists); err != nil {
			return created, err
		}
	}
	return created, nil
}

func writeRecord(ctx context.Context, w client.Writer, record *corev1.ConfigMap, exists bool) error {
	var err error
	if exists {
		err = w.Update(ctx, record)
	} else {
		err = w.Create(ctx, record)
	}
	if err != nil {
		return fmt.Errorf("write ConfigMap %s/%s: %w", record.Namespace, record.Name, err)
	}
	return nil
}

// Installer is a manager runnable that runs Install on the leader until it succeeds.
// Right after an installation the webhook that admits RoleTemplates may not answer
// yet (the manager's own pod is not ready): it retries, with backoff.
type Installer struct {
	Reader    client.Reader
	Writer    client.Writer
	Namespace string
	// MaxBackoff bounds the wait between attempts; default 30 s.
	MaxBackoff time.Duration
}

// NeedLeaderElection: only the leader creates the built-ins.
func (*Installer) NeedLeaderElection() bool { return true }

// Start retries Install until it succeeds or ctx is done; it never fails the manager.
func (i *Installer) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("builtin-roletemplates")
	maxBackoff := i.MaxBackoff
	if maxBackoff <= 0 {
		maxBackoff = 30 * time.Second
	}
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		created, err := Install(ctx, i.Reader, i.Writer, i.Namespace)
		if err == nil {
			if len(created) > 0 {
				log.Info("Created the built-in RoleTemplates", "created", created)
			}
			return nil
		}
		// Expected for a few seconds after an installation, while the webhook starts;
		// said once that long, then every ten attempts (about five minutes).
		if attempt%10 == 3 {
			log.Info("Cannot create the built-in RoleTemplates yet; retrying", "reason", err.Error())
		} else {
			log.V(1).Info("Cannot create the built-in RoleTemplates yet; retrying", "reason", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
