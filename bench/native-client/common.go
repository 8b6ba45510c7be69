package main

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// options are the flags every connecting subcommand takes.
type options struct {
	host       string
	port       int
	line       string
	minTLS     string
	maxTLS     string
	delayMs    int
	delay      time.Duration
	delayFirst bool
	net        int
	maxSeconds float64
	stdin      bool
	// -gateway: the device protocol of examples/amqp-gateway instead of the echo (gateway.go)
	gateway      string
	devicePrefix string
	secret       string
}

// commonFlags registers the shared flags on fs; maxSeconds is the subcommand's default bound.
func commonFlags(fs *flag.FlagSet, maxSeconds float64) *options {
	o := &options{}
	fs.StringVar(&o.host, "host", "127.0.0.1", "server address")
	fs.IntVar(&o.port, "port", 0, "server port (required)")
	fs.StringVar(&o.line, "line", "hi", "the line to send; an attempt succeeds when it is echoed back")
	fs.StringVar(&o.minTLS, "min-tls", "1.2", "lowest TLS version offered: 1.2 or 1.3")
	fs.StringVar(&o.maxTLS, "max-tls", "1.3", "highest TLS version offered: 1.2 or 1.3")
	fs.IntVar(&o.delayMs, "delay", 0, "emulated distance, ms: every write on the TCP connection goes out this much later, in order")
	fs.BoolVar(&o.delayFirst, "delay-first", true, "with -delay, delay the first write too (false: the ClientHello goes out at once)")
	fs.IntVar(&o.net, "net", 60, "second octet of the source addresses 127.<net>.x.y (one address per device, 250 per third octet)")
	fs.Float64Var(&o.maxSeconds, "max-seconds", maxSeconds, "hard bound: print the result so far (\"truncated\":true) and exit after this long")
	fs.BoolVar(&o.stdin, "stdin", false, "read commands from stdin (storm, stop); the end of stdin means stop")
	fs.StringVar(&o.gateway, "gateway", "", "speak the gateway's device protocol instead of the echo: hello (hello → welcome) or msg (hello → welcome, one msg → its ack); the secret comes from $"+gatewaySecretEnv)
	fs.StringVar(&o.devicePrefix, "device-prefix", "bench", "with -gateway: device ids are <prefix>-<source address, dots as _>")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage of corral-load %s:\n", fs.Name())
		fs.PrintDefaults()
	}
	return o
}

// parse parses args into fs, checks the shared options and starts the -max-seconds watchdog.
func parse(fs *flag.FlagSet, o *options, args []string) {
	if err := fs.Parse(args); err != nil {
		os.Exit(2)
	}
	if fs.NArg() > 0 {
		fatalf("unexpected arguments: %v", fs.Args())
	}
	if o.delayMs < 0 {
		fatalf("-delay must be ≥ 0")
	}
	o.delay = time.Duration(o.delayMs) * time.Millisecond
	if o.port <= 0 || o.port > 65535 {
		fatalf("-port is required (1-65535)")
	}
	if o.net < 1 || o.net > 254 {
		fatalf("-net must be 1-254")
	}
	if _, err := tlsVersion(o.minTLS); err != nil {
		fatalf("-min-tls: %v", err)
	}
	if _, err := tlsVersion(o.maxTLS); err != nil {
		fatalf("-max-tls: %v", err)
	}
	if o.maxSeconds <= 0 {
		fatalf("-max-seconds must be positive")
	}
	o.checkGateway()
}

func fatalf(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "corral-load: "+format+"\n", a...)
	os.Exit(2)
}

func logf(format string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "[corral-load %d] "+format+"\n", append([]interface{}{os.Getpid()}, a...)...)
}

func tlsVersion(v string) (uint16, error) {
	switch v {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("%q: want 1.2 or 1.3", v)
}

// tlsConfig is the client configuration every device starts from: no verification (the bench
// certificate is self-signed), the versions asked for, SNI "localhost" (the certificate's name,
// and the key under which a session is cached).
func (o *options) tlsConfig() *tls.Config {
	minV, _ := tlsVersion(o.minTLS)
	maxV, _ := tlsVersion(o.maxTLS)
	return &tls.Config{InsecureSkipVerify: true, MinVersion: minV, MaxVersion: maxV, ServerName: "localhost"}
}

func (o *options) target() string { return net.JoinHostPort(o.host, strconv.Itoa(o.port)) }

// addressesPerNet is how many source addresses one second octet holds: 255 third octets × 250.
const addressesPerNet = 255 * 250

// sourceAddress is address number index of the range 127.<net>.x.y, as sourceAddress in
// bench/lib/client-config.ts: 127.<net>.1.1, 127.<net>.1.2, …, 250 per third octet. Past the
// 63,750 addresses of one second octet it goes on in the next one.
func sourceAddress(netOctet, index int) string {
	n := netOctet + index/addressesPerNet
	i := index % addressesPerNet
	if n > 255 {
		n = 255
	}
	return fmt.Sprintf("127.%d.%d.%d", n, i/250+1, i%250+1)
}

// delayedConn emulates distance: each Write is copied and goes out `delay` later, in order
// (Write itself returns at once, as a kernel send buffer would). With skipFirst, the first write
// goes out at once: a device far away sends its ClientHello right after the TCP handshake, so
// only its later flights reach the server late. Reads are not delayed.
type delayedConn struct {
	net.Conn
	delay     time.Duration
	skipFirst bool

	mu     sync.Mutex
	writes int
	queue  chan delayedWrite
	done   chan struct{}
	err    error
	closed bool
}

type delayedWrite struct {
	due  time.Time
	data []byte
}

func newDelayedConn(c net.Conn, delay time.Duration, skipFirst bool) *delayedConn {
	return &delayedConn{Conn: c, delay: delay, skipFirst: skipFirst, done: make(chan struct{})}
}

func (d *delayedConn) Write(b []byte) (int, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, net.ErrClosed
	}
	if d.err != nil {
		err := d.err
		d.mu.Unlock()
		return 0, err
	}
	d.writes++
	if d.skipFirst && d.writes == 1 {
		d.mu.Unlock()
		return d.Conn.Write(b)
	}
	if d.queue == nil {
		d.queue = make(chan delayedWrite, 64)
		go d.sender(d.queue)
	}
	q := d.queue
	d.mu.Unlock()
	w := delayedWrite{due: time.Now().Add(d.delay), data: append([]byte(nil), b...)}
	select {
	case q <- w:
		return len(b), nil
	case <-d.done:
		return 0, net.ErrClosed
	}
}

// sender writes the queued writes, each at its due time, until the connection closes.
func (d *delayedConn) sender(q chan delayedWrite) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var w delayedWrite
		select {
		case w = <-q:
		case <-d.done:
			return
		}
		if wait := time.Until(w.due); wait > 0 {
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-d.done:
				return
			}
		}
		if _, err := d.Conn.Write(w.data); err != nil {
			d.mu.Lock()
			d.err = err
			d.mu.Unlock()
			return
		}
	}
}

func (d *delayedConn) Close() error {
	d.mu.Lock()
	if !d.closed {
		d.closed = true
		close(d.done)
	}
	d.mu.Unlock()
	return d.Conn.Close()
}

// counters are the handshakes this process completed, full and resumed.
var handshakesFull, handshakesResumed atomic.Int64

// attempt is one try of a device: TCP connect from src, TLS handshake, the line written and its
// echo read (with -gateway: the gateway exchange instead), all within deadline.
type attempt struct {
	ok        bool
	reason    string // when !ok: deadline, refused, closed, error, mismatch (see classify); with -gateway also nack, gateway:<code>
	stage     string // when !ok, where it failed: connect, handshake, echo; with -gateway welcome or ack instead of echo
	localPort int    // 0 when the TCP connect did not complete
	resumed   bool
	latency   time.Duration
	connected time.Duration // from the start to the TCP connect's completion (0 if it did not complete)
	handshake time.Duration // from the start to the TLS handshake's completion (0 if it did not complete)
	conn      *tls.Conn     // when ok and keep: the connection, deadline cleared
	raw       net.Conn
}

// connectOnce runs one attempt. With keep, a successful connection is returned open; otherwise
// every connection is closed before it returns. cfg may be shared (no session cache) or the
// device's own (its session cache). With -gateway the device's id is o.deviceID(src).
func (o *options) connectOnce(src string, deadline time.Duration, cfg *tls.Config, keep bool) attempt {
	return o.connectAs(src, "", deadline, cfg, keep)
}

// connectAs is connectOnce for the gateway device `device` ("": o.deviceID(src)).
func (o *options) connectAs(src, device string, deadline time.Duration, cfg *tls.Config, keep bool) attempt {
	start := time.Now()
	end := start.Add(deadline)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Deadline: end}
	raw, err := d.Dial("tcp", o.target())
	if err != nil {
		return attempt{reason: classify(err), stage: "connect", latency: time.Since(start)}
	}
	a := attempt{localPort: raw.LocalAddr().(*net.TCPAddr).Port, raw: raw, connected: time.Since(start)}
	_ = raw.SetDeadline(end)
	var conn net.Conn = raw
	if o.delay > 0 {
		conn = newDelayedConn(raw, o.delay, !o.delayFirst)
	}
	tc := tls.Client(conn, cfg)
	a.stage = "handshake"
	fail := func(reason string) attempt {
		_ = conn.Close()
		a.reason = reason
		a.latency = time.Since(start)
		return a
	}
	if err := tc.Handshake(); err != nil {
		return fail(classify(err))
	}
	a.handshake = time.Since(start)
	a.resumed = tc.ConnectionState().DidResume
	if a.resumed {
		handshakesResumed.Add(1)
	} else {
		handshakesFull.Add(1)
	}
	if o.gateway != gatewayNone {
		if device == "" {
			device = o.deviceID(src)
		}
		if reason, stage := gatewayExchange(tc, o.gateway, device, o.secret); reason != "" {
			a.stage = stage
			return fail(reason)
		}
		return o.succeeded(a, start, raw, tc, keep)
	}
	a.stage = "echo"
	if _, err := tc.Write([]byte(o.line + "\n")); err != nil {
		return fail(classify(err))
	}
	// Reading the echo also processes what the server sent after its handshake (TLS 1.3 session
	// tickets), so a device's session cache holds a ticket once the echo is back.
	got, err := readLine(tc, len(o.line)+1)
	if err != nil {
		return fail(classify(err))
	}
	if got != o.line {
		return fail("mismatch")
	}
	return o.succeeded(a, start, raw, tc, keep)
}

// succeeded completes a successful attempt: its latency, and the connection kept (deadline
// cleared) or closed.
func (o *options) succeeded(a attempt, start time.Time, raw net.Conn, tc *tls.Conn, keep bool) attempt {
	a.ok = true
	a.stage = ""
	a.latency = time.Since(start)
	if keep {
		_ = raw.SetDeadline(time.Time{})
		a.conn = tc
	} else {
		_ = tc.Close()
	}
	return a
}

// readLine reads until a newline and returns what came before it (at most max bytes are kept).
func readLine(r io.Reader, max int) (string, error) {
	var buf [512]byte
	var got []byte
	for {
		n, err := r.Read(buf[:])
		for _, c := range buf[:n] {
			if c == '\n' {
				return string(got), nil
			}
			if len(got) < max {
				got = append(got, c)
			}
		}
		if err != nil {
			return string(got), err
		}
	}
}

// classify names why an attempt failed: deadline (it ran out of time), refused (the TCP connect
// was refused), closed (the server closed or reset the connection), error (anything else, e.g. a
// TLS alert or no free port).
func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "deadline"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "closed"
	}
	return "error"
}

// cpuMicros is this process's CPU time so far (user + system), in µs.
func cpuMicros() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	return ru.Utime.Sec*1e6 + int64(ru.Utime.Usec) + ru.Stime.Sec*1e6 + int64(ru.Stime.Usec)
}

// clientCost is what every result reports about the client itself.
type clientCost struct {
	CPUMicros         int64 `json:"cpuUs"`
	FullHandshakes    int64 `json:"fullHandshakes"`
	ResumedHandshakes int64 `json:"resumedHandshakes"`
}

func currentCost() clientCost {
	return clientCost{CPUMicros: cpuMicros(), FullHandshakes: handshakesFull.Load(), ResumedHandshakes: handshakesResumed.Load()}
}

var stdoutMu sync.Mutex

// emit prints v as one JSON line on stdout.
func emit(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		logf("cannot encode a result: %v", err)
		return
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	_, _ = os.Stdout.Write(append(b, '\n'))
}

var finishOnce sync.Once

// finish prints the final result (once: the watchdog and the normal end race for it).
func finish(result interface{}) bool {
	printed := false
	finishOnce.Do(func() {
		emit(result)
		printed = true
	})
	return printed
}

// watchdog bounds the run: after o.maxSeconds it prints snapshot(true) as the result and exits.
func watchdog(o *options, snapshot func(truncated bool) interface{}) {
	time.AfterFunc(time.Duration(o.maxSeconds*float64(time.Second)), func() {
		logf("-max-seconds %.0f reached: printing what there is and exiting", o.maxSeconds)
		finish(snapshot(true))
		os.Exit(0)
	})
}

// commands delivers stdin lines (with -stdin); it is closed when stdin ends.
func commands(o *options) <-chan string {
	ch := make(chan string, 4)
	if !o.stdin {
		return ch // never delivers, never closes
	}
	go func() {
		s := bufio.NewScanner(os.Stdin)
		for s.Scan() {
			ch <- s.Text()
		}
		close(ch)
	}()
	return ch
}

// waitStop blocks until a "stop" line or the end of stdin (returns at once without -stdin).
func waitStop(o *options, cmds <-chan string) {
	if !o.stdin {
		return
	}
	for c := range cmds {
		if c == "stop" {
			return
		}
	}
}

// percentiles of values (ms), as the TypeScript side computes them (bench/lib/numbers.ts).
type percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func percentilesOf(values []float64) *percentiles {
	if len(values) == 0 {
		return nil
	}
	s := append([]float64(nil), values...)
	sort.Float64s(s)
	at := func(p float64) float64 {
		i := int(float64(len(s)) * p / 100)
		if i > len(s)-1 {
			i = len(s) - 1
		}
		return round3(s[i])
	}
	return &percentiles{P50: at(50), P90: at(90), P99: at(99), Max: round3(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// backoff is how long a device waits before its next attempt after n failures in a row (n ≥ 0):
// base × 2ⁿ, capped at limit, × uniform [0.5, 1.5).
func backoff(base, limit time.Duration, n int) time.Duration {
	b := float64(base) * math.Pow(2, float64(n))
	if b > float64(limit) {
		b = float64(limit)
	}
	return time.Duration(b * (0.5 + rand.Float64()))
}

// waitTurn paces starts at rate per second from begin: it sleeps until start number i is due
// (not at all if that is past) and returns when it was due.
func waitTurn(begin time.Time, i int, rate float64) time.Time {
	due := begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait)
	}
	return due
}

// openLoopCounts are what an open-loop load (the overload and attack subcommands) counts of its
// arrivals besides their outcomes, guarded by the caller's mutex.
type openLoopCounts struct {
	skippedLate int
	skippedOpen int
	maxOpenSeen int64
}

// openLoop hands out the arrivals of an open-loop load: arrival i of offered is due at begin +
// i/rate, paced by a 1 ms clock whether or not earlier ones are done, and every arrival is due
// once the window has passed. One the clock reaches more than maxLag after it was due is skipped
// (late), and so is one that would hold more than maxOpen sockets; otherwise open is raised and
// run(i, dueAt) is started in its own goroutine (counted in wg; it must call wg.Done and lower
// open when done, and may itself skip the arrival as late once it runs). openLoop returns once
// every arrival was handed out, or when stop is closed (nil: never). Each arrival is handed out
// once: started + skipped = offered.
func openLoop(begin time.Time, rate float64, window time.Duration, offered int, maxLag time.Duration, maxOpen int64, stop <-chan struct{}, mu *sync.Mutex, counts *openLoopCounts, open *atomic.Int64, wg *sync.WaitGroup, run func(i int, dueAt time.Time)) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for next := 0; next < offered; {
		var now time.Time
		select {
		case now = <-tick.C:
		case <-stop:
			return
		}
		elapsed := now.Sub(begin)
		due := int(elapsed.Seconds() * rate)
		if due > offered || elapsed >= window {
			due = offered
		}
		for ; next < due; next++ {
			dueAt := begin.Add(time.Duration(float64(next) / rate * float64(time.Second)))
			late := time.Since(dueAt) > maxLag
			full := !late && open.Load() >= maxOpen
			var n int64
			if !late && !full {
				n = open.Add(1)
			}
			mu.Lock()
			switch {
			case late:
				counts.skippedLate++
			case full:
				counts.skippedOpen++
			case n > counts.maxOpenSeen:
				counts.maxOpenSeen = n
			}
			mu.Unlock()
			if !late && !full {
				wg.Add(1)
				go run(next, dueAt)
			}
		}
	}
}

// every calls f every interval until stop is closed.
func every(interval time.Duration, stop <-chan struct{}, f func()) {
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				f()
			case <-stop:
				return
			}
		}
	}()
}
