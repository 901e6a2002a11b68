package remote

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// body is what a hostile or broken target puts in its answers.
const body = "<html>BODY-SECRET x509: tls: certificate signed by unknown authority eyJhbGciOiJSUzI1NiJ9.BODY-SECRET</html>"

func TestDescribe(t *testing.T) {
	gr := schema.GroupResource{Group: "rbac.authorization.k8s.io", Resource: "rolebindings"}
	gk := schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "RoleBinding"}
	longField := "spec." + strings.Repeat("x", 300)
	invalid := apierrors.NewInvalid(gk, "rb", field.ErrorList{
		field.Invalid(field.NewPath("subjects").Index(0).Child("name"), body, body),
		field.Required(field.NewPath("roleRef"), body),
		field.Invalid(field.NewPath("subjects").Index(0).Child("name"), "again", body), // duplicate path
		field.Invalid(field.NewPath("metadata", "labels"), body, body),
		field.Invalid(field.NewPath("a"), body, body),
		field.Invalid(field.NewPath("b"), body, body),
		field.Invalid(field.NewPath("c"), body, body),
		field.Invalid(field.NewPath("d"), body, body),
	})
	invalid.ErrStatus.Details.Causes = append([]metav1.StatusCause{{Field: longField, Message: body}}, invalid.ErrStatus.Details.Causes...)
	ssaConflict := apierrors.NewApplyConflict([]metav1.StatusCause{
		{Type: metav1.CauseTypeFieldManagerConflict, Field: ".roleRef", Message: body},
	}, body)
	longBody := &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 500, Reason: metav1.StatusReasonInternalError, Message: strings.Repeat(body, 1000),
	}}
	hostileReason := &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: 503, Reason: metav1.StatusReason(body), Message: body,
	}}
	weirdCode := &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 999, Message: body}}
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	<-ctx.Done()

	tests := []struct {
		name       string
		err        error
		reason     string
		contains   []string
		notContain []string
	}{
		{"forbidden", apierrors.NewForbidden(gr, "rb", errors.New(body)), "Forbidden", []string{"the target refused it (403 Forbidden)"}, nil},
		{"wrapped forbidden", fmt.Errorf("apply: %w", apierrors.NewForbidden(gr, "rb", errors.New(body))), "Forbidden", []string{"403 Forbidden"}, nil},
		{"unauthorized", apierrors.NewUnauthorized(body), "Unauthorized", []string{"401 Unauthorized"}, nil},
		{"not found", apierrors.NewNotFound(gr, "rb-"+body), "NotFound", []string{"404 Not Found"}, nil},
		{"conflict", apierrors.NewConflict(gr, "rb", errors.New(body)), "Conflict", []string{"409 Conflict"}, nil},
		{"already exists", apierrors.NewAlreadyExists(gr, "rb"), "Conflict", []string{"409 Conflict, AlreadyExists"}, nil},
		{"apply conflict", ssaConflict, "Conflict", []string{"409 Conflict", "fields .roleRef"}, nil},
		{"invalid", invalid, "Invalid", []string{
			"the target rejected it as invalid (422 Unprocessable Entity, Invalid): fields spec.xxx",
			"subjects[0].name, roleRef, metadata.labels, a and 3 more",
		}, []string{strings.Repeat("x", 128), ", b", "again"}},
		{"too large", apierrors.NewRequestEntityTooLargeError(body), "TooLarge", []string{"413 Request Entity Too Large"}, nil},
		{"etcd too large", apierrors.NewInternalError(errors.New("etcdserver: request is too large")), "TooLarge", []string{"500 Internal Server Error"}, []string{"etcdserver"}},
		{"too many requests", apierrors.NewTooManyRequests(body, 5), "Throttled", []string{"429 Too Many Requests"}, nil},
		{"timeout", apierrors.NewTimeoutError(body, 5), "Timeout", []string{"504 Gateway Timeout"}, nil},
		{"server timeout", apierrors.NewServerTimeout(gr, "create", 5), "Timeout", []string{"500 Internal Server Error, ServerTimeout"}, nil},
		{"long body", longBody, "ServerError", []string{"the target failed with a server error (500 Internal Server Error, InternalError)"}, nil},
		{"hostile reason", hostileReason, "ServerError", []string{"(503 Service Unavailable)"}, nil},
		{"unknown code", weirdCode, "Failed", []string{"status 999"}, nil},
		{"generic server response", apierrors.NewGenericServerResponse(502, "patch", gr, "rb", body, 0, true), "ServerError", []string{"502"}, nil},
		{"bad request", apierrors.NewBadRequest(body), "Failed", []string{"the target refused it (400 Bad Request)"}, nil},

		{"deadline", fmt.Errorf("client rate limiter Wait returned an error: %w", context.DeadlineExceeded), "Timeout", []string{"deadline"}, nil},
		{"wrapped context deadline", fmt.Errorf("get: %w", ctx.Err()), "Timeout", []string{"before the deadline"}, nil},
		{"url error deadline", &url.Error{Op: "Get", URL: "https://x/" + body, Err: context.DeadlineExceeded}, "Timeout", nil, nil},
		{"rate limiter", fmt.Errorf("client rate limiter Wait returned an error: %w", fmt.Errorf("rate: Wait(n=%d) would exceed context deadline", 1)), "Timeout",
			[]string{"client-side rate limit"}, nil},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), "Failed", []string{"canceled"}, nil},

		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, "Unreachable", []string{"connection refused"}, nil},
		{"op error", &url.Error{Op: "Get", URL: "https://x/" + body, Err: &net.OpError{Op: "read", Net: "tcp", Err: errors.New(body)}}, "Unreachable", []string{"read failed"}, nil},
		{"read timeout", &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}, "Timeout", nil, nil},
		{"dns", &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: body}}, "Unreachable", []string{"does not resolve"}, nil},
		{"eof", &url.Error{Op: "Get", URL: "https://x", Err: io.EOF}, "Unreachable", []string{"closed unexpectedly"}, nil},
		{"guarded dial", &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: 169.254.169.254", ErrAddressNotAllowed)}, "Unreachable",
			[]string{"refused to dial the target: it resolves to a link-local or cloud metadata address; start the manager with --allow-link-local-clusters"}, nil},
		{"tls unknown authority", &url.Error{Op: "Get", URL: "https://x", Err: x509.UnknownAuthorityError{}}, "Unreachable", []string{"not signed by the configured CA"}, nil},
		{"tls text", &url.Error{Op: "Get", URL: "https://x", Err: errors.New("tls: first record does not look like a TLS handshake")}, "Unreachable", []string{"the TLS handshake with the target failed"}, nil},
		{"generic", errors.New(body), "Failed", []string{"the request to the target failed"}, nil},
		{"decode error quoting body", fmt.Errorf("Object 'Kind' is missing in '%s'", body), "Failed", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, msg := Describe(tt.err)
			if reason != tt.reason {
				t.Errorf("reason %q, want %q (message %q)", reason, tt.reason, msg)
			}
			if msg == "" || msg[0] < 'a' || msg[0] > 'z' || len(msg) > 400 {
				t.Errorf("message %q is not a short lower-case phrase", msg)
			}
			for _, s := range append([]string{"BODY-SECRET", "eyJhbGci", "html"}, tt.notContain...) {
				if strings.Contains(msg, s) {
					t.Errorf("message %q contains %q", msg, s)
				}
			}
			for _, s := range tt.contains {
				if !strings.Contains(msg, s) {
					t.Errorf("message %q does not contain %q", msg, s)
				}
			}
		})
	}
	if r, m := Describe(nil); r != "" || m != "" {
		t.Errorf("Describe(nil) = %q, %q", r, m)
	}
}

func TestDescribeCauseFieldLimits(t *testing.T) {
	var causes []metav1.StatusCause
	for i := 0; i < 20; i++ {
		causes = append(causes, metav1.StatusCause{Field: fmt.Sprintf("spec.f%d.%s\x00\n", i, strings.Repeat("é", 200)), Message: body})
	}
	err := &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: 422, Reason: metav1.StatusReasonInvalid,
		Details: &metav1.StatusDetails{Causes: causes}}}
	_, msg := Describe(err)
	fields := strings.Split(strings.TrimSuffix(msg[strings.Index(msg, "fields ")+len("fields "):], " and 15 more"), ", ")
	if len(fields) != 5 || !strings.HasSuffix(msg, " and 15 more") {
		t.Fatalf("want 5 fields and 15 more, got %q", msg)
	}
	for _, f := range fields {
		if n := len([]rune(f)); n > 128 {
			t.Errorf("field %q has %d runes", f, n)
		}
		if strings.ContainsAny(f, "\x00\n") {
			t.Errorf("field %q holds control characters", f)
		}
	}
}

func TestClassify(t *testing.T) {
	const ep, src = "https://10.0.0.1:6443", "secret drover-system/c key 'value'"
	tests := []struct {
		name     string
		err      error
		reason   string
		contains string
	}{
		{"connected", nil, ReasonConnected, "connected to " + ep},
		{"unauthorized", apierrors.NewUnauthorized(body), ReasonUnauthorized, "401 Unauthorized"},
		{"forbidden", apierrors.NewForbidden(schema.GroupResource{}, "", errors.New(body)), ReasonForbidden, "403 Forbidden"},
		{"status with x509 in body", apierrors.NewInternalError(errors.New(body)), ReasonProbeFailed, ep + " answered /version with 500 Internal Server Error, InternalError"},
		{"hostile reason", &apierrors.StatusError{ErrStatus: metav1.Status{Code: 418, Reason: metav1.StatusReason(body), Message: body}}, ReasonProbeFailed, "418 I'm a teapot"},
		{"body text quoting x509", fmt.Errorf("Object 'Kind' is missing in '%s'", body), ReasonProbeFailed, "probing " + ep + " failed"},
		{"unknown authority", &url.Error{Op: "Get", URL: ep, Err: x509.UnknownAuthorityError{}}, ReasonCertificateInvalid, "unknown authority"},
		{"unknown authority text", &url.Error{Op: "Get", URL: ep, Err: errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")}, ReasonCertificateInvalid, "unknown authority"},
		{"tls text", &url.Error{Op: "Get", URL: "https://evil/x509: " + body, Err: errors.New("tls: failed to verify certificate: x509: certificate has expired or is not yet valid")},
			ReasonCertificateInvalid, "x509: certificate has expired or is not yet valid"},
		{"hostname text", &url.Error{Op: "Get", URL: ep, Err: errors.New("tls: failed to verify certificate: x509: certificate is valid for " + body + ", not 10.0.0.1")},
			ReasonCertificateInvalid, "not valid for that host name"},
		{"refused", &url.Error{Op: "Get", URL: ep, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}, ReasonUnreachable, "connection refused"},
		{"guarded dial", &url.Error{Op: "Get", URL: ep, Err: &net.OpError{Op: "dial", Net: "tcp", Err: fmt.Errorf("%w: 169.254.169.254", ErrAddressNotAllowed)}},
			ReasonUnreachable, "refused to dial " + ep + ": it resolves to a link-local or cloud metadata address; start the manager with --allow-link-local-clusters if this is intended"},
		{"deadline", context.DeadlineExceeded, ReasonUnreachable, "no answer in time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reason, msg := Classify(tt.err, ep, src)
			if reason != tt.reason {
				t.Errorf("reason %q, want %q (message %q)", reason, tt.reason, msg)
			}
			if !strings.Contains(msg, tt.contains) {
				t.Errorf("message %q does not contain %q", msg, tt.contains)
			}
			for _, s := range []string{"BODY-SECRET", "eyJhbGci", "html"} {
				if strings.Contains(msg, s) {
					t.Errorf("message %q contains %q", msg, s)
				}
			}
		})
	}
}
