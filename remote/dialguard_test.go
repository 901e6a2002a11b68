package remote

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestGuardDialAllowsOrdinaryAddresses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var hooked atomic.Int32
	d := &net.Dialer{Timeout: 5 * time.Second, Control: func(string, string, syscall.RawConn) error {
		hooked.Add(1)
		return nil
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := GuardDial(Policy{}, d)(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dialing %s: %v", ln.Addr(), err)
	}
	conn.Close()
	if hooked.Load() != 1 {
		t.Errorf("the dialer's own Control hook ran %d times, want 1", hooked.Load())
	}
	if d.ControlContext != nil {
		t.Errorf("GuardDial modified the dialer it was given")
	}
}

func TestGuardDialRefusesMetadata(t *testing.T) {
	var hooked atomic.Int32
	d := &net.Dialer{Timeout: 5 * time.Second, ControlContext: func(context.Context, string, string, syscall.RawConn) error {
		hooked.Add(1)
		return nil
	}}
	dial := GuardDial(Policy{}, d)
	for _, addr := range []string{"169.254.169.254:443", "169.254.169.254:80", "100.100.100.200:80", "169.254.1.1:6443"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		conn, err := dial(ctx, "tcp", addr)
		cancel()
		if conn != nil {
			conn.Close()
		}
		if !errors.Is(err, ErrAddressNotAllowed) {
			t.Errorf("dialing %s: got %v, want ErrAddressNotAllowed", addr, err)
		}
		// Refused in the Control hook, before connect(2): no waiting for a handshake.
		if el := time.Since(start); el > time.Second {
			t.Errorf("dialing %s took %v; the refusal should come before connecting", addr, el)
		}
	}
	if hooked.Load() != 0 {
		t.Errorf("the dialer's own hook ran %d times for refused addresses", hooked.Load())
	}
}

// A name that resolves to the metadata address is refused too: the check runs on the
// resolved address. The resolver talks to an in-process DNS responder.
func TestGuardDialRefusesNameResolvingToMetadata(t *testing.T) {
	d := &net.Dialer{Timeout: 5 * time.Second, Resolver: &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			client, server := net.Pipe()
			go answerDNS(server, [4]byte{169, 254, 169, 254})
			return client, nil
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := GuardDial(Policy{}, d)(ctx, "tcp4", "metadata.drover.test:80")
	if conn != nil {
		conn.Close()
	}
	if !errors.Is(err, ErrAddressNotAllowed) {
		t.Fatalf("got %v, want ErrAddressNotAllowed", err)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		t.Fatalf("name did not resolve: %v", err)
	}
}

func TestGuardDialAllowLinkLocal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	conn, err := GuardDial(Policy{AllowLinkLocal: true}, nil)(ctx, "tcp", "169.254.169.254:443")
	if conn != nil {
		conn.Close()
	}
	if errors.Is(err, ErrAddressNotAllowed) {
		t.Fatalf("refused with AllowLinkLocal: %v", err)
	}
}

// answerDNS reads one DNS query (TCP framing: the resolver sees a stream, not a
// PacketConn) and answers an A query with ip and any other query with no records.
func answerDNS(c net.Conn, ip [4]byte) {
	defer c.Close()
	var size [2]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return
	}
	q := make([]byte, binary.BigEndian.Uint16(size[:]))
	if _, err := io.ReadFull(c, q); err != nil || len(q) < 12 {
		return
	}
	// Question: name labels, then type and class.
	i := 12
	for i < len(q) && q[i] != 0 {
		i += int(q[i]) + 1
	}
	if i+5 > len(q) {
		return
	}
	qtype := binary.BigEndian.Uint16(q[i+1:])
	question := q[12 : i+5]
	resp := make([]byte, 12, 64+len(question))
	copy(resp, q[:2])                            // ID
	binary.BigEndian.PutUint16(resp[2:], 0x8180) // response, recursion desired and available, no error
	binary.BigEndian.PutUint16(resp[4:], 1)      // one question
	resp = append(resp, question...)
	if qtype == 1 { // A
		binary.BigEndian.PutUint16(resp[6:], 1) // one answer
		resp = append(resp, 0xc0, 12)           // pointer to the question's name
		resp = append(resp, 0, 1, 0, 1)         // type A, class IN
		resp = append(resp, 0, 0, 0, 60)        // TTL
		resp = append(resp, 0, 4, ip[0], ip[1], ip[2], ip[3])
	}
	framed := binary.BigEndian.AppendUint16(nil, uint16(len(resp)))
	_, _ = c.Write(append(framed, resp...))
}
