package controllers

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
)

func TestIsNotFound(t *testing.T) {
	nf := apierrors.NewNotFound(schema.GroupResource{Resource: "managedclusters"}, "x")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"not found", nf, true},
		{"wrapped", fmt.Errorf("patch: %w", nf), true},
		{"aggregate of not found", kerrors.NewAggregate([]error{nf}), true},
		{"nested aggregate", kerrors.NewAggregate([]error{kerrors.NewAggregate([]error{nf})}), true},
		{"aggregate with another error", kerrors.NewAggregate([]error{nf, errors.New("boom")}), false},
		{"other", errors.New("boom"), false},
	} {
		if got := isNotFound(tc.err); got != tc.want {
			t.Errorf("%s: isNotFound = %v, want %v", tc.name, got, tc.want)
		}
	}
}
