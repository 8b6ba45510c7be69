package main

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// sourceAddress must lay addresses out as bench/lib/client-config.ts#sourceAddress does.
func TestSourceAddress(t *testing.T) {
	cases := map[int]string{0: "127.60.1.1", 1: "127.60.1.2", 249: "127.60.1.250", 250: "127.60.2.1", 63749: "127.60.255.250", 63750: "127.61.1.1"}
	for i, want := range cases {
		if got := sourceAddress(60, i); got != want {
			t.Errorf("sourceAddress(60, %d) = %s, want %s", i, got, want)
		}
	}
}

// Delayed writes arrive in order, each no earlier than the delay after it was made; with
// skipFirst the first write is not delayed.
func TestDelayedConnOrderAndDelay(t *testing.T) {
	for _, skipFirst := range []bool{false, true} {
		client, server := net.Pipe()
		const delay = 50 * time.Millisecond
		d := newDelayedConn(client, delay, skipFirst)
		got := make(chan []byte, 1)
		firstAt := make(chan time.Duration, 1)
		start := time.Now()
		go func() {
			var all []byte
			buf := make([]byte, 16)
			for len(all) < 6 {
				n, err := server.Read(buf)
				if len(all) == 0 && n > 0 {
					firstAt <- time.Since(start)
				}
				all = append(all, buf[:n]...)
				if err != nil {
					break
				}
			}
			got <- all
		}()
		for _, w := range []string{"ab", "cd", "ef"} {
			if _, err := d.Write([]byte(w)); err != nil {
				t.Fatal(err)
			}
		}
		first := <-firstAt
		if all := <-got; string(all) != "abcdef" {
			t.Errorf("skipFirst=%v: got %q, want in-order abcdef", skipFirst, all)
		}
		if !skipFirst && first < delay {
			t.Errorf("first write arrived after %v, want ≥ %v", first, delay)
		}
		if skipFirst && first >= delay {
			t.Errorf("skipFirst: first write arrived after %v, want at once", first)
		}
		_ = d.Close()
		_ = server.Close()
	}
}

// The captured ClientHello is one whole TLS handshake record, and a prefix can be cut from it.
func TestCaptureClientHello(t *testing.T) {
	o := &options{minTLS: "1.2", maxTLS: "1.3"}
	hello := captureClientHello(o.tlsConfig())
	if hello[0] != 22 || hello[5] != 1 {
		t.Fatalf("not a handshake record holding a ClientHello: % x", hello[:6])
	}
	if n := 5 + int(hello[3])<<8 + int(hello[4]); n != len(hello) {
		t.Fatalf("record length %d, captured %d", n, len(hello))
	}
	if !bytes.Contains(hello, []byte("localhost")) {
		t.Error("the ClientHello does not name the server (SNI localhost)")
	}
}

func TestReadLine(t *testing.T) {
	r := io.MultiReader(bytes.NewBufferString("h"), bytes.NewBufferString("i\nrest"))
	if got, err := readLine(r, 8); err != nil || got != "hi" {
		t.Fatalf("readLine = %q, %v", got, err)
	}
}

func TestPercentiles(t *testing.T) {
	p := percentilesOf([]float64{5, 1, 4, 2, 3})
	if p.P50 != 3 || p.Max != 5 || p.P99 != 5 {
		t.Fatalf("percentiles = %+v", p)
	}
	if percentilesOf(nil) != nil {
		t.Fatal("percentiles of nothing should be nil")
	}
}
