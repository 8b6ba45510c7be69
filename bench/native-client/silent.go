package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Kinds of hostile peer.
const (
	kindSilent              = "silent"                // TCP connect, then nothing
	kindPartialHello        = "partial-hello"         // the first -partial-bytes of a ClientHello, then nothing
	kindHelloThenSilent     = "hello-then-silent"     // a whole ClientHello record, then never an answer
	kindHandshakeThenSilent = "handshake-then-silent" // a completed TLS handshake, then nothing
)

// runSilent holds -count hostile sockets of one -kind, spread over -addresses source addresses
// (several sockets per address use several ports of it), for -seconds after all are open (or
// until stop). A socket the server closes is reopened at once (-reopen), but no socket opens
// more often than once per -min-cycle ms, so a server that closes at once is not turned into a
// busy loop. The ClientHello sent by partial-hello and hello-then-silent is a real one from
// crypto/tls, captured once and replayed: a hostile peer costs the client no crypto.
//
// Prints {"t":"holding",...} once every socket has been opened once, and at the end
// {"t":"done",...}: sockets opened, closed by the server (and how), reopened, failed opens by
// reason, open at the end, and how long the server held each socket it closed, from the TCP
// connect to the close (ms: p50, p90, p99, max), plus the client's CPU.
func runSilent(args []string) {
	fs := flag.NewFlagSet("silent", flag.ExitOnError)
	o := commonFlags(fs, 600)
	count := fs.Int("count", 0, "hostile sockets held at once (required)")
	addresses := fs.Int("addresses", 1, "source addresses they are spread over")
	kind := fs.String("kind", kindSilent, "silent | partial-hello | hello-then-silent | handshake-then-silent")
	partialBytes := fs.Int("partial-bytes", 40, "partial-hello: bytes of the ClientHello sent")
	seconds := fs.Float64("seconds", 30, "how long to hold them once all are open")
	reopen := fs.Bool("reopen", true, "reopen a socket the server closed")
	minCycle := fs.Int("min-cycle", 100, "ms: shortest time between two opens of one socket")
	deadline := fs.Int("deadline", 10000, "ms for the TCP connect (and the handshake of handshake-then-silent)")
	openRate := fs.Float64("open-rate", 0, "sockets opened per second at the start (0: all at once)")
	parse(fs, o, args)
	if *count <= 0 || *addresses <= 0 {
		fatalf("-count and -addresses must be positive")
	}
	if *addresses > *count {
		*addresses = *count
	}
	if o.maxSeconds < *seconds+30 {
		o.maxSeconds = *seconds + 30
	}
	var hello []byte
	switch *kind {
	case kindSilent, kindHandshakeThenSilent:
	case kindPartialHello, kindHelloThenSilent:
		hello = captureClientHello(o.tlsConfig())
		if *kind == kindPartialHello {
			if *partialBytes <= 0 || *partialBytes >= len(hello) {
				fatalf("-partial-bytes must be 1-%d (the ClientHello is %d bytes)", len(hello)-1, len(hello))
			}
			hello = hello[:*partialBytes]
		}
	default:
		fatalf("-kind %q: want silent, partial-hello, hello-then-silent or handshake-then-silent", *kind)
	}
	cfg := o.tlsConfig()
	cycle := time.Duration(*minCycle) * time.Millisecond
	connectDeadline := time.Duration(*deadline) * time.Millisecond

	var (
		mu             sync.Mutex
		opened         int
		reopened       int
		closedByServer int
		closedHow      = map[string]int{}
		openFailures   = map[string]int{}
		held           []float64
		live           = map[net.Conn]struct{}{}
		firstDone      int
		holdingAt      time.Time
		stopping       atomic.Bool
	)
	begin := time.Now()
	holding := make(chan struct{})
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopNow := func() { stopOnce.Do(func() { close(stop) }) }

	snapshot := func(truncated bool) interface{} {
		mu.Lock()
		defer mu.Unlock()
		cost := currentCost()
		holdingMs := 0.0
		if !holdingAt.IsZero() {
			holdingMs = ms(holdingAt.Sub(begin))
		}
		return map[string]interface{}{
			"t":                 "done",
			"truncated":         truncated,
			"kind":              *kind,
			"count":             *count,
			"addresses":         *addresses,
			"opened":            opened,
			"reopened":          reopened,
			"closedByServer":    closedByServer,
			"closedHow":         closedHow,
			"openFailures":      openFailures,
			"openAtEnd":         len(live),
			"heldMs":            percentilesOf(held),
			"allOpenAfterMs":    holdingMs,
			"cpuUs":             cost.CPUMicros,
			"fullHandshakes":    cost.FullHandshakes,
			"resumedHandshakes": cost.ResumedHandshakes,
		}
	}
	watchdog(o, snapshot)

	// open makes one hostile socket; it returns the connection and when its TCP connect completed.
	open := func(src string) (net.Conn, time.Time, string) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: connectDeadline}
		raw, err := d.Dial("tcp", o.target())
		if err != nil {
			return nil, time.Time{}, classify(err)
		}
		at := time.Now()
		var conn net.Conn = raw
		if o.delay > 0 {
			conn = newDelayedConn(raw, o.delay, !o.delayFirst)
		}
		switch *kind {
		case kindPartialHello, kindHelloThenSilent:
			if _, err := conn.Write(hello); err != nil {
				_ = conn.Close()
				return nil, at, classify(err)
			}
		case kindHandshakeThenSilent:
			_ = raw.SetDeadline(at.Add(connectDeadline))
			tc := tls.Client(conn, cfg)
			if err := tc.Handshake(); err != nil {
				_ = conn.Close()
				return nil, at, classify(err)
			}
			_ = raw.SetDeadline(time.Time{})
			if tc.ConnectionState().DidResume {
				handshakesResumed.Add(1)
			} else {
				handshakesFull.Add(1)
			}
		}
		return conn, at, ""
	}

	slot := func(i int) {
		src := sourceAddress(o.net, i%*addresses)
		first := true
		for !stopping.Load() {
			began := time.Now()
			conn, at, reason := open(src)
			mu.Lock()
			if reason != "" {
				openFailures[reason]++
			} else {
				opened++
				if !first {
					reopened++
				}
				live[conn] = struct{}{}
			}
			if first {
				first = false
				firstDone++
				if firstDone == *count {
					holdingAt = time.Now()
					close(holding)
				}
			}
			mu.Unlock()
			if reason == "" {
				// Hold: read (and drop) whatever the server sends until it closes the socket.
				how := drain(conn)
				heldFor := time.Since(at)
				mu.Lock()
				delete(live, conn)
				if !stopping.Load() {
					closedByServer++
					closedHow[how]++
					held = append(held, ms(heldFor))
				}
				mu.Unlock()
				_ = conn.Close()
				if !*reopen {
					return
				}
			}
			if wait := cycle - time.Since(began); wait > 0 {
				select {
				case <-time.After(wait):
				case <-stop:
					return
				}
			}
		}
	}
	go func() {
		for c := range commands(o) {
			if c == "stop" {
				stopNow()
			}
		}
		stopNow()
	}()
	progress := make(chan struct{})
	every(2*time.Second, progress, func() {
		mu.Lock()
		defer mu.Unlock()
		logf("silent %s: %.1f s, %d open, %d opened, %d closed by the server", *kind, time.Since(begin).Seconds(), len(live), opened, closedByServer)
	})
	go pace(*count, *openRate, 0, stop, slot)

	select {
	case <-holding:
		mu.Lock()
		emit(map[string]interface{}{"t": "holding", "open": len(live), "openFailures": openFailures, "afterMs": ms(time.Since(begin))})
		mu.Unlock()
		select {
		case <-time.After(time.Duration(*seconds * float64(time.Second))):
		case <-stop:
		}
	case <-stop:
	}
	stopping.Store(true)
	stopNow()
	close(progress)
	result := snapshot(false)
	mu.Lock()
	for c := range live {
		_ = c.Close()
	}
	mu.Unlock()
	finish(result)
}

// drain reads and drops everything until the connection ends; it says how: eof (the server
// closed it), reset, or error.
func drain(c net.Conn) string {
	var buf [1024]byte
	for {
		if _, err := c.Read(buf[:]); err != nil {
			switch classify(err) {
			case "closed":
				if errors.Is(err, syscall.ECONNRESET) {
					return "reset"
				}
				return "eof"
			default:
				return "error"
			}
		}
	}
}

var errCaptured = errors.New("ClientHello captured")

// captureConn records what is written to it and fails every call: a handshake over it stops
// right after writing its ClientHello.
type captureConn struct{ data []byte }

func (c *captureConn) Write(b []byte) (int, error) {
	c.data = append(c.data, b...)
	return 0, errCaptured
}
func (c *captureConn) Read([]byte) (int, error)         { return 0, errCaptured }
func (c *captureConn) Close() error                     { return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *captureConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// captureClientHello returns the TLS record holding the ClientHello crypto/tls sends with cfg.
func captureClientHello(cfg *tls.Config) []byte {
	c := &captureConn{}
	_ = tls.Client(c, cfg).Handshake()
	if len(c.data) < 5 || c.data[0] != 22 {
		fatalf("could not capture a ClientHello (%d bytes)", len(c.data))
	}
	n := 5 + int(c.data[3])<<8 + int(c.data[4])
	if len(c.data) < n {
		fatalf("captured ClientHello is short: %d of %d bytes", len(c.data), n)
	}
	return c.data[:n]
}
