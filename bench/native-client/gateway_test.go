package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The token is the gateway's: hex HMAC-SHA256 of the device id under the secret (the value below
// is Node's createHmac('sha256', 's3cret').update('bench-127_60_1_1').digest('hex')).
func TestDeviceToken(t *testing.T) {
	const want = "f25c48666a171778484b9961f194625231cb78fc3662be37139e2aea06d24545"
	if got := deviceToken("s3cret", "bench-127_60_1_1"); got != want {
		t.Fatalf("deviceToken = %s, want %s", got, want)
	}
	o := &options{devicePrefix: "bench"}
	if got := o.deviceID("127.60.1.1"); got != "bench-127_60_1_1" {
		t.Fatalf("deviceID = %s", got)
	}
}

// fakeGateway answers one device on c: it checks the hello (device id and token), then answers
// with `welcome` (or the line given), reads one msg and answers `ack` (or the line given). It
// reports what it read.
type fakeGateway struct {
	welcome, ack string // lines to answer with; "" for the right ones; "-" to close instead
}

type seen struct {
	hello map[string]string
	msg   map[string]interface{}
	err   string
}

func (g fakeGateway) serve(c net.Conn, secret string) seen {
	defer c.Close()
	r := bufio.NewReader(c)
	var s seen
	line, err := r.ReadBytes('\n')
	if err != nil {
		s.err = "no hello: " + err.Error()
		return s
	}
	if err := json.Unmarshal(line, &s.hello); err != nil {
		s.err = "hello is not JSON: " + string(line)
		return s
	}
	if s.hello["type"] != "hello" || s.hello["token"] != deviceToken(secret, s.hello["device"]) {
		s.err = "bad hello: " + string(line)
		return s
	}
	switch g.welcome {
	case "-":
		return s
	case "":
		_, _ = c.Write([]byte(`{"type":"welcome","node":"gw","session":"s-1"}` + "\n"))
	default:
		_, _ = c.Write([]byte(g.welcome + "\n"))
	}
	_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	line, err = r.ReadBytes('\n')
	if err != nil {
		return s // no msg (hello-only devices send none)
	}
	_ = json.Unmarshal(line, &s.msg)
	switch g.ack {
	case "-":
		return s
	case "":
		_, _ = c.Write([]byte(`{"type":"ack","id":"` + s.msg["id"].(string) + `"}` + "\n"))
	default:
		_, _ = c.Write([]byte(g.ack + "\n"))
	}
	// Stay until the device closes (a real gateway keeps the session).
	_, _ = r.ReadBytes('\n')
	return s
}

func TestGatewayExchange(t *testing.T) {
	cases := []struct {
		name      string
		mode      string
		gw        fakeGateway
		want      string
		wantStage string
		wantMsg   bool
	}{
		{"msg acked", gatewayMsg, fakeGateway{}, "", "", true},
		{"hello only", gatewayHello, fakeGateway{}, "", "", false},
		{"refused hello", gatewayMsg, fakeGateway{welcome: `{"type":"error","code":"unauthorized","message":"no"}`}, "gateway:unauthorized", "welcome", false},
		{"overloaded", gatewayHello, fakeGateway{welcome: `{"type":"error","code":"overloaded","message":"later"}`}, "gateway:overloaded", "welcome", false},
		{"closed before welcome", gatewayMsg, fakeGateway{welcome: "-"}, "closed", "welcome", false},
		{"not a welcome", gatewayMsg, fakeGateway{welcome: `{"type":"pong"}`}, "mismatch", "welcome", false},
		{"nacked", gatewayMsg, fakeGateway{ack: `{"type":"nack","id":"m-1","reason":"unroutable"}`}, "nack", "ack", true},
		{"ack of another message", gatewayMsg, fakeGateway{ack: `{"type":"ack","id":"m-2"}`}, "mismatch", "ack", true},
		{"closed before the ack", gatewayMsg, fakeGateway{ack: "-"}, "closed", "ack", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			done := make(chan seen, 1)
			go func() { done <- tc.gw.serve(server, "s3cret") }()
			_ = client.SetDeadline(time.Now().Add(2 * time.Second))
			got, stage := gatewayExchange(client, tc.mode, "dev-1", "s3cret")
			_ = client.Close()
			s := <-done
			if s.err != "" {
				t.Fatal(s.err)
			}
			if got != tc.want || stage != tc.wantStage {
				t.Errorf("gatewayExchange = %q at %q, want %q at %q", got, stage, tc.want, tc.wantStage)
			}
			if s.hello["device"] != "dev-1" {
				t.Errorf("hello for device %q, want dev-1", s.hello["device"])
			}
			if tc.wantMsg != (s.msg != nil) {
				t.Errorf("msg sent: %v, want %v", s.msg != nil, tc.wantMsg)
			}
			if s.msg != nil && (s.msg["type"] != "msg" || s.msg["id"] != "m-1" || s.msg["topic"] != "t") {
				t.Errorf("msg = %v", s.msg)
			}
		})
	}
}

// A device that gets no welcome within its deadline fails with "deadline".
func TestGatewayExchangeDeadline(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	go func() { _, _ = bufio.NewReader(server).ReadBytes('\n') }() // reads the hello, never answers
	_ = client.SetDeadline(time.Now().Add(100 * time.Millisecond))
	if got, stage := gatewayExchange(client, gatewayHello, "dev-1", "s"); got != "deadline" || stage != "welcome" {
		t.Fatalf("gatewayExchange = %q at %q, want deadline at welcome", got, stage)
	}
}

// testTLSListener is a TLS listener on 127.0.0.1 with a fresh self-signed ECDSA certificate.
func testTLSListener(t *testing.T) net.Listener {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"}, DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// A storm device with -gateway msg counts as back only once its message is acked: here the
// gateway refuses its first attempt (overloaded), so it comes back on its second, after a backoff,
// holding its connection; the source address names the device.
func TestStormGatewayDevice(t *testing.T) {
	ln := testTLSListener(t)
	var conns atomic.Int32
	var mu sync.Mutex
	var devices []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n := conns.Add(1)
			gw := fakeGateway{}
			if n == 1 {
				gw.welcome = `{"type":"error","code":"overloaded","message":"later"}`
			}
			go func() {
				s := gw.serve(c, "s3cret")
				mu.Lock()
				devices = append(devices, s.hello["device"])
				mu.Unlock()
			}()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	o := &options{host: "127.0.0.1", port: port, minTLS: "1.2", maxTLS: "1.3", gateway: gatewayMsg, devicePrefix: "bench", secret: "s3cret", maxSeconds: 10}
	s := &storm{
		o: o, deadline: 2 * time.Second, backoffBase: 20 * time.Millisecond, backoffCap: time.Second, giveUp: 5 * time.Second, hold: true,
		held: map[*tls.Conn]struct{}{}, ended: make(chan struct{}), stop: make(chan struct{}), armed: make(chan struct{}),
	}
	s.devices = []*stormDevice{{index: 0, address: "127.0.0.1", cfg: o.tlsConfig()}}
	s.startStorm()
	s.stormDevice(s.devices[0])
	select {
	case <-s.ended:
	default:
		t.Fatal("the storm did not end with its only device")
	}
	r := s.result(false).(map[string]interface{})
	if r["connected"] != 1 {
		t.Fatalf("connected = %v, want 1", r["connected"])
	}
	if a := r["attempts"].([]int); a[0] != 2 {
		t.Fatalf("attempts = %v, want [2]", a)
	}
	ab := r["abandoned"].([]abandon)
	if len(ab) != 1 || ab[0].Reason != "gateway:overloaded" || ab[0].Stage != "welcome" {
		t.Fatalf("abandoned = %+v, want one gateway:overloaded at welcome", ab)
	}
	if len(s.held) != 1 {
		t.Fatalf("%d connections held, want 1", len(s.held))
	}
	s.closeAll()
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, d := range devices {
		if d != "bench-127_0_0_1" {
			t.Errorf("device id %q, want bench-127_0_0_1", d)
		}
	}
	if len(devices) != 2 {
		t.Errorf("%d devices seen by the gateway, want 2", len(devices))
	}
}
