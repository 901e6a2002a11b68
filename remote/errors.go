package remote

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
	ReasonTunnelDisconnected = v1alpha1.ReasonTunnelDisconnected
)

// Reasons Describe returns.
const (
	DescribeForbidden    = "Forbidden"
	DescribeUnauthorized = "Unauthorized"
	DescribeNotFound     = "NotFound"
	DescribeConflict     = "Conflict"
	DescribeInvalid      = "Invalid"
	DescribeTooLarge     = "TooLarge"
	DescribeThrottled    = "Throttled"
	DescribeTimeout      = "Timeout"
	DescribeUnreachable  = "Unreachable"
	DescribeServerError  = "ServerError"
	DescribeFailed       = "Failed"
)

// Classify turns a probe error into a condition reason and a message that a person
// at a terminal understands. endpoint is the URL that was dialled; source names where
// the credentials came from (e.g. "secret drover-system/x key 'value'"). The message
// never contains credentials, nor anything of the target's response body: only the
// endpoint, the source and the kind of failure.
func Classify(err error, endpoint, source string) (reason, message string) {
	if err == nil {
		return ReasonConnected, fmt.Sprintf("connected to %s", endpoint)
	}
	if errors.Is(err, ErrAddressNotAllowed) {
		return ReasonUnreachable, fmt.Sprintf("refused to dial %s: it resolves to a link-local or cloud metadata address; start the manager with %s if this is intended", endpoint, FlagAllowLinkLocal)
	}
	// Answers from the server come first: their text is the target's, so none of the
	// string matching below may look at it.
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		switch {
		case apierrors.IsUnauthorized(err):
			return ReasonUnauthorized, fmt.Sprintf("%s rejected the credentials in %s (401 Unauthorized); update the kubeconfig in that secret", endpoint, source)
		case apierrors.IsForbidden(err):
			return ReasonForbidden, fmt.Sprintf("%s refused the identity in %s access to /version (403 Forbidden); grant it cluster-admin or the permissions Drover needs", endpoint, source)
		}
		return ReasonProbeFailed, fmt.Sprintf("%s answered /version with %s", endpoint, statusPhrase(st.Status()))
	}
	switch tlsKind(err) {
	case tlsUnknownAuthority:
		return ReasonCertificateInvalid, fmt.Sprintf("the server certificate of %s is not signed by the CA in %s (x509: unknown authority); fix certificate-authority-data", endpoint, source)
	case tlsHostname:
		return ReasonCertificateInvalid, fmt.Sprintf("the server certificate of %s is not valid for that host name (x509); fix the server URL in %s or the certificate", endpoint, source)
	case tlsOther:
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
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s: %s failed", endpoint, opName(opErr.Op))
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return ReasonUnreachable, fmt.Sprintf("cannot reach %s", endpoint)
	}
	return ReasonProbeFailed, fmt.Sprintf("probing %s failed", endpoint)
}

// Describe turns any error from a request to a target (a read, a server-side apply, a delete) into a
// fixed reason and a message in Drover's own words: never the response body, which a hostile or broken
// target controls. Reasons: "Forbidden", "Unauthorized", "NotFound", "Conflict" (409), "Invalid" (422; the message
// may list the field paths from StatusDetails.Causes[].Field, each truncated to 128 chars, at most 5, but never the
// causes' messages), "TooLarge" (413 / request entity too large), "Throttled" (429), "Timeout" (context deadline,
// client-side rate limiter wait exceeding the deadline — client-go returns an error containing "rate: Wait(n=" and
// "would exceed context deadline" — and server timeouts 504), "Unreachable" (network errors), "ServerError" (5xx), "Failed" (other).
// A nil error gives "", "".
func Describe(err error) (reason, message string) {
	if err == nil {
		return "", ""
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return describeStatus(err, st.Status())
	}
	if errors.Is(err, ErrAddressNotAllowed) {
		return DescribeUnreachable, "refused to dial the target: it resolves to a link-local or cloud metadata address; start the manager with " + FlagAllowLinkLocal + " if this is intended"
	}
	s := err.Error() // matched against fixed phrases only, never quoted
	switch {
	case strings.Contains(s, "rate: Wait(n=") && strings.Contains(s, "would exceed context deadline"):
		return DescribeTimeout, "the client-side rate limit would not let the request go before its deadline"
	case errors.Is(err, context.DeadlineExceeded):
		return DescribeTimeout, "the target did not answer before the deadline"
	case errors.Is(err, context.Canceled):
		return DescribeFailed, "the request was canceled before it finished"
	}
	switch tlsKind(err) {
	case tlsUnknownAuthority:
		return DescribeUnreachable, "the TLS handshake with the target failed: its certificate is not signed by the configured CA"
	case tlsHostname:
		return DescribeUnreachable, "the TLS handshake with the target failed: its certificate is not valid for its host name"
	case tlsOther:
		return DescribeUnreachable, "the TLS handshake with the target failed"
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return DescribeUnreachable, "cannot reach the target: connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return DescribeUnreachable, "cannot reach the target: no route to host"
	case errors.Is(err, syscall.ECONNRESET):
		return DescribeUnreachable, "cannot reach the target: connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return DescribeUnreachable, "the connection to the target closed unexpectedly"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return DescribeUnreachable, "cannot reach the target: host name does not resolve"
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		if opErr.Op != "dial" && opErr.Timeout() {
			return DescribeTimeout, "the target did not answer in time"
		}
		return DescribeUnreachable, fmt.Sprintf("cannot reach the target: %s failed", opName(opErr.Op))
	}
	if isTimeout(err) {
		return DescribeTimeout, "the target did not answer in time"
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return DescribeUnreachable, "cannot reach the target"
	}
	if tooLargeText(s) {
		return DescribeTooLarge, "the request is too large for the target"
	}
	return DescribeFailed, "the request to the target failed"
}

// describeStatus describes an answer of the target's API server. Only the code, a
// known reason and (for 409 and 422) cause field paths are used; the message and the
// causes' messages are the target's words and are never quoted.
func describeStatus(err error, st metav1.Status) (reason, message string) {
	phrase := statusPhrase(st)
	switch {
	case apierrors.IsUnauthorized(err):
		return DescribeUnauthorized, "the target rejected the credentials (" + phrase + ")"
	case apierrors.IsForbidden(err):
		return DescribeForbidden, "the target refused it (" + phrase + ")"
	case apierrors.IsNotFound(err):
		return DescribeNotFound, "the target does not have it (" + phrase + ")"
	case apierrors.IsConflict(err), apierrors.IsAlreadyExists(err):
		return DescribeConflict, "the target reported a conflict (" + phrase + ")" + causeFields(st)
	case apierrors.IsInvalid(err):
		return DescribeInvalid, "the target rejected it as invalid (" + phrase + ")" + causeFields(st)
	case apierrors.IsRequestEntityTooLargeError(err), tooLargeText(st.Message):
		return DescribeTooLarge, "the target refused it as too large (" + phrase + ")"
	case apierrors.IsTooManyRequests(err):
		return DescribeThrottled, "the target is throttling requests (" + phrase + ")"
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), st.Code == http.StatusGatewayTimeout:
		return DescribeTimeout, "the target did not finish in time (" + phrase + ")"
	case st.Code >= 500 && st.Code <= 599:
		return DescribeServerError, "the target failed with a server error (" + phrase + ")"
	}
	return DescribeFailed, "the target refused it (" + phrase + ")"
}

// tooLargeText matches the phrases of 413 answers and of etcd's size limit; it only
// classifies, the text is not quoted.
func tooLargeText(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "request entity too large") || strings.Contains(s, "request is too large")
}

// knownReasons are the StatusReasons Kubernetes defines. A Status's reason comes from
// the target's response body, so only these are ever repeated.
var knownReasons = map[metav1.StatusReason]bool{
	metav1.StatusReasonUnauthorized:          true,
	metav1.StatusReasonForbidden:             true,
	metav1.StatusReasonNotFound:              true,
	metav1.StatusReasonAlreadyExists:         true,
	metav1.StatusReasonConflict:              true,
	metav1.StatusReasonGone:                  true,
	metav1.StatusReasonInvalid:               true,
	metav1.StatusReasonServerTimeout:         true,
	metav1.StatusReasonStoreReadError:        true,
	metav1.StatusReasonTimeout:               true,
	metav1.StatusReasonTooManyRequests:       true,
	metav1.StatusReasonBadRequest:            true,
	metav1.StatusReasonMethodNotAllowed:      true,
	metav1.StatusReasonNotAcceptable:         true,
	metav1.StatusReasonRequestEntityTooLarge: true,
	metav1.StatusReasonUnsupportedMediaType:  true,
	metav1.StatusReasonInternalError:         true,
	metav1.StatusReasonExpired:               true,
	metav1.StatusReasonServiceUnavailable:    true,
}

// statusPhrase names a Status in fixed words: "403 Forbidden", "500 Internal Server
// Error, ServerTimeout" or "status 999". The reason is added when it is a known one
// that the status text does not already say.
func statusPhrase(st metav1.Status) string {
	text := http.StatusText(int(st.Code))
	phrase := fmt.Sprintf("status %d", st.Code)
	if text != "" {
		phrase = fmt.Sprintf("%d %s", st.Code, text)
	}
	if r := st.Reason; knownReasons[r] && !strings.Contains(strings.ReplaceAll(text, " ", ""), string(r)) {
		phrase += ", " + string(r)
	}
	return phrase
}

const (
	maxCauseFields   = 5
	maxCauseFieldLen = 128
)

// causeFields lists the distinct field paths of a Status's causes, at most
// maxCauseFields, each cut to maxCauseFieldLen characters and stripped of anything
// unprintable. The causes' messages are never used.
func causeFields(st metav1.Status) string {
	if st.Details == nil {
		return ""
	}
	var fields []string
	seen := map[string]bool{}
	more := 0
	for _, c := range st.Details.Causes {
		f := printable(c.Field, maxCauseFieldLen)
		if f == "" || seen[f] {
			continue
		}
		seen[f] = true
		if len(fields) == maxCauseFields {
			more++
			continue
		}
		fields = append(fields, f)
	}
	if len(fields) == 0 {
		return ""
	}
	out := ": fields " + strings.Join(fields, ", ")
	if more > 0 {
		out += fmt.Sprintf(" and %d more", more)
	}
	return out
}

// printable returns s with unprintable runes (and invalid UTF-8) replaced by '?' and
// cut to at most n runes, the last of them "…" when cut.
func printable(s string, n int) string {
	var b strings.Builder
	count := 0
	for i, r := range s {
		if count == n-1 && utf8.RuneCountInString(s[i:]) > 1 {
			b.WriteRune('…')
			break
		}
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			r = '?'
		}
		b.WriteRune(r)
		count++
	}
	return strings.TrimSpace(b.String())
}

type tlsFailure int

const (
	tlsNone tlsFailure = iota
	tlsUnknownAuthority
	tlsHostname
	tlsOther
)

// tlsKind tells TLS failures apart. Typed errors are recognised anywhere; the text of
// an error is only matched when it comes from the transport (url.Error, net.OpError),
// never from an answer of the server, whose text the target chooses.
func tlsKind(err error) tlsFailure {
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var record tls.RecordHeaderError
	switch {
	case errors.As(err, &unknownAuthority):
		return tlsUnknownAuthority
	case errors.As(err, &hostname):
		return tlsHostname
	case errors.As(err, &invalid), errors.As(err, &verify), errors.As(err, &alert), errors.As(err, &record):
		return tlsOther
	}
	s := transportText(err)
	switch {
	case s == "":
		return tlsNone
	case strings.Contains(s, "certificate is valid for"):
		return tlsHostname
	case strings.Contains(s, "certificate signed by unknown authority"):
		return tlsUnknownAuthority
	case strings.Contains(s, "x509:"), strings.Contains(s, "tls:"):
		return tlsOther
	}
	return tlsNone
}

// transportText is the text of a TLS failure reported by the transport: a TLS alert
// (net.OpError "remote error" or "local error"), or the error inside a url.Error that
// holds no other network error. The URL of a url.Error, which may be a redirect's, is
// left out. It is "" for anything else.
func transportText(err error) string {
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		if (opErr.Op == "remote error" || opErr.Op == "local error") && opErr.Err != nil {
			return opErr.Err.Error()
		}
		return ""
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return ""
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) && urlErr.Err != nil {
		return urlErr.Err.Error()
	}
	return ""
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// opName keeps a net.OpError's operation to the words the net package uses.
func opName(op string) string {
	switch op {
	case "dial", "read", "write", "close", "listen", "accept", "remote error", "local error", "proxyconnect":
		return op
	}
	return "the connection"
}

// tlsDetail keeps the part of a transport TLS error after the last "x509: " or
// "tls: ", which names the problem without quoting certificate contents.
func tlsDetail(err error) string {
	s := transportText(err)
	if strings.Contains(s, "certificate is valid for") {
		return "x509: certificate is not valid for that host name"
	}
	for _, p := range []string{"x509: ", "tls: "} {
		if i := strings.LastIndex(s, p); i >= 0 {
			return printable(s[i:], 160)
		}
	}
	return "handshake failed"
}

// ErrNoTunnel is what a tunnel dialer returns when no agent tunnel is open; the
// tunnel package wraps it.
var ErrNoTunnel = errors.New("no agent tunnel is open")

// classifyTunnel explains a failed probe of a cluster reached through its agent's
// tunnel: whatever failed on the way, the cause a person can act on is the tunnel.
func classifyTunnel(err error, reason, message string) (string, string) {
	switch {
	case errors.Is(err, ErrNoTunnel):
		return ReasonTunnelDisconnected, "no agent tunnel is open: the agent is not running, or cannot reach the hub"
	case reason == ReasonUnreachable:
		return ReasonTunnelDisconnected, "the agent's tunnel does not answer in time (the agent or its network is down)"
	case reason == ReasonUnauthorized || reason == ReasonForbidden:
		return reason, "the cluster's API server refused the agent's identity; the agent needs the ClusterRoleBinding drover:agent-tunnel (apply the registration manifest again)"
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Code == http.StatusBadGateway {
		return ReasonUnreachable, "the agent cannot reach its cluster's API server"
	}
	return reason, message
}
