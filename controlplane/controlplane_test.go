package controlplane_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/drover-io/drover/controlplane"
)

// TestControlPlanes starts two control planes side by side, one with a controller
// manager, and checks that each is reachable through its own admin kubeconfig, that
// the controller manager does the work tests depend on, and that an API server can
// be stopped and restarted on the same address.
func TestControlPlanes(t *testing.T) {
	g := NewWithT(t)
	cps, err := controlplane.StartMany(2, "target", controlplane.Options{ControllerManager: true})
	g.Expect(err).NotTo(HaveOccurred())
	defer func() {
		for _, cp := range cps {
			g.Expect(cp.Stop()).To(Succeed())
		}
	}()
	g.Expect(cps[0].Endpoint()).NotTo(Equal(cps[1].Endpoint()))

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	clients := make([]client.Client, len(cps))
	for i, cp := range cps {
		// The kubeconfig is what a user would store in a Secret on the hub.
		cfg, err := clientcmd.RESTConfigFromKubeConfig(cp.Kubeconfig())
		g.Expect(err).NotTo(HaveOccurred())
		clients[i], err = client.New(cfg, client.Options{})
		g.Expect(err).NotTo(HaveOccurred())
	}

	// The two clusters are separate: a namespace created in one is absent in the other.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-first"}}
	g.Expect(clients[0].Create(ctx, ns)).To(Succeed())
	err = clients[1].Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
	g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "namespace leaked across control planes: %v", err)

	// kube-controller-manager aggregates the view role and finishes namespace deletion.
	var view rbacv1.ClusterRole
	g.Expect(clients[1].Get(ctx, client.ObjectKey{Name: "view"}, &view)).To(Succeed())
	g.Expect(view.Rules).NotTo(BeEmpty())
	g.Expect(clients[0].Delete(ctx, ns)).To(Succeed())
	g.Eventually(func() bool {
		return apierrors.IsNotFound(clients[0].Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{}))
	}, time.Minute, 200*time.Millisecond).Should(BeTrue(), "namespace never finished terminating")

	// A user without groups is authenticated but not authorized.
	userKubeconfig, err := cps[0].AddUser("alice@example.com")
	g.Expect(err).NotTo(HaveOccurred())
	userCfg, err := clientcmd.RESTConfigFromKubeConfig(userKubeconfig)
	g.Expect(err).NotTo(HaveOccurred())
	userClient, err := client.New(userCfg, client.Options{})
	g.Expect(err).NotTo(HaveOccurred())
	err = userClient.List(ctx, &corev1.NamespaceList{})
	g.Expect(apierrors.IsForbidden(err)).To(BeTrue(), "expected Forbidden, got %v", err)

	// Stop and restart one API server; the other stays up throughout.
	g.Expect(cps[1].StopAPIServer()).To(Succeed())
	g.Expect(clients[1].List(ctx, &corev1.NamespaceList{})).NotTo(Succeed())
	g.Expect(clients[0].List(ctx, &corev1.NamespaceList{})).To(Succeed())
	g.Expect(cps[1].RestartAPIServer()).To(Succeed())
	g.Eventually(func() error {
		return clients[1].List(ctx, &corev1.NamespaceList{})
	}, 30*time.Second, 200*time.Millisecond).Should(Succeed())
}
