package remote

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"syscall"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/drover-io/drover/api/v1alpha1"
)

// Reasons for a cluster not being connected; they are the API's condition reasons.
const (
	ReasonUnreachable        = v1alpha1.ReasonUnreachable
	ReasonCertificateInvalid = v1alpha1.ReasonCertificateInvalid
	ReasonUnauthorized       = v1alpha1.ReasonUnauthorized
	ReasonForbidden          = v1alpha1.ReasonForbidden
	ReasonProbeFailed        = v1alpha1.ReasonProbeFailed
	ReasonConnected          = v1alpha1.ReasonConnected
	ReasonProbing            = v1alpha1.ReasonProbing
)

// Classify turns a probe error into a condition reason and a message that a person
// at a terminal understands. endpoint is the URL that was dialled; source names where
// the credentials came from (e.g. "secret drover-system/x key 'value'"). The message
// never contains credentials: only the endpoint, the source and the kind of failure.
func Classify(err error, endpoint, source string) (reason, message string) {
	if err == nil {
		return ReasonConnected, fmt.Sprintf("connected to %s", endpoint)
	}
	switch {
	case apierrors.IsUnauthorized(err):
		return ReasonUnauthorized, fmt.Sprintf("%s rejected the credentials in %s (401 Unauthorized); update the kubeconfig in that secret", endpoint, source)
	case apierrors.IsForbidden(err):
		return ReasonForbidden, fmt.Sprintf("%s refused the identity in %s access to /version (403 Forbidden); grant it cluster-admin or the permissions Drover needs", endpoint, source)
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &unknownAuthority), strings.Contains(err.Error(), "certificate signed by unknown authority"):
		return ReasonCertificateInvalid, fmt.Sprintf("the server certificate of %s is not signed by the CA in %s (x509: unknown authority); fix certificate-authority-data", endpoint, source)
	case errors.As(err, &hostname):
		return ReasonCertificateInvalid, fmt.Sprintf("the server certificate of %s is not valid for that host name (x509); fix the server URL in %s or the certificate", endpoint, source)
	case errors.As(err, &invalid), strings.Contains(err.Error(), "x509:"), strings.Contains(err.Error(), "tls:"):
		return ReasonCertificateInvalid, fmt.Sprintf("TLS with %s failed: %s; check the CA and client certificate in %s", endpoint, tlsDetail(err), source)
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: connection refused", endpoint)
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: no answer in time", endpoint)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: no route to host", endpoint)
	case errors.Is(err, syscall.ECONNRESET):
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: connection reset", endpoint)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: host name does not resolve", endpoint)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: %s failed", endpoint, opErr.Op)
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s", endpoint)
	}
	if se, ok := err.(apierrors.APIStatus); ok {
		return ReasonProbeFailed, fmt.Sprintf("%s answered /version with %d %s", endpoint, se.Status().Code, se.Status().Reason)
	}
	return ReasonProbeFailed, fmt.Sprintf("probing %s failed", endpoint)
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// tlsDetail keeps the part of a TLS error after the last "x509: " or "tls: ", which
// names the problem without quoting certificate contents.
func tlsDetail(err error) string {
	s := err.Error()
	for _, p := range []string{"x509: ", "tls: "} {
		if i := strings.LastIndex(s, p); i >= 0 {
			d := s[i:]
			if len(d) > 160 {
				d = d[:160]
			}
			return d
		}
	}
	return "handshake failed"
}
