package controllers

import (
	"errors"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	kerrors "k8s.io/apimachinery/pkg/util/errors"
)

// isNotFound sees through the aggregates Cluster API's patch helper returns: an
// object deleted while it was being reconciled is no error.
func isNotFound(err error) bool {
	if apierrors.IsNotFound(err) {
		return true
	}
	var agg kerrors.Aggregate
	if errors.As(err, &agg) {
		for _, e := range agg.Errors() {
			if !isNotFound(e) {
				return false
			}
		}
		return len(agg.Errors()) > 0
	}
	return false
}
