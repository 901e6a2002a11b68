package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
)

// ErrAddressNotAllowed is wrapped by refused dials.
var ErrAddressNotAllowed = errors.New("address not allowed")

// GuardDial wraps a dial function so that, unless p.AllowLinkLocal, connections to link-local and
// metadata IPs are refused after name resolution (so a DNS name pointing at 169.254.169.254 is refused too).
//
// The check runs in the dialer's ControlContext hook, which sees each resolved address
// after the socket is created and before it connects, so a refused address never sees a
// packet. An existing Control or ControlContext hook of d still runs for allowed
// addresses. d is not modified; nil means a zero net.Dialer.
func GuardDial(p Policy, d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	g := &net.Dialer{}
	if d != nil {
		*g = *d
	}
	if p.AllowLinkLocal {
		return g.DialContext
	}
	prevCtx, prev := g.ControlContext, g.Control
	g.Control = nil
	g.ControlContext = func(ctx context.Context, network, address string, c syscall.RawConn) error {
		if err := checkDialAddress(network, address); err != nil {
			return err
		}
		switch {
		case prevCtx != nil:
			return prevCtx(ctx, network, address, c)
		case prev != nil:
			return prev(network, address, c)
		}
		return nil
	}
	return g.DialContext
}

// checkDialAddress refuses a resolved address (ip:port) that is link-local or a cloud
// metadata address. Addresses of IP networks that cannot be read are refused too.
func checkDialAddress(network, address string) error {
	if !strings.HasPrefix(network, "tcp") && !strings.HasPrefix(network, "udp") && !strings.HasPrefix(network, "ip") {
		return nil // unix sockets and the like have no IP address
	}
	host := address
	if h, _, err := net.SplitHostPort(address); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: cannot read the resolved address %q", ErrAddressNotAllowed, address)
	}
	if isLinkLocalOrMetadata(addr) {
		return fmt.Errorf("%w: %s is a link-local or cloud metadata address", ErrAddressNotAllowed, addr)
	}
	return nil
}
