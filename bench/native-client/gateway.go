package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// The device protocol of examples/amqp-gateway, as far as a benchmark device speaks it (-gateway):
// after the TLS handshake a device sends {"type":"hello","device":<id>,"token":<hex HMAC-SHA256 of
// the id under the gateway secret>} and waits for {"type":"welcome",...}; with -gateway msg it
// then sends one {"type":"msg","id":"m-1","topic":"t","body":1} and waits for
// {"type":"ack","id":"m-1"}. Only then has the attempt succeeded. The secret comes from the
// environment (CORRAL_GATEWAY_SECRET, as the gateway takes it), never from a flag: a command line
// is readable by every user of the machine.

// Gateway exchanges (-gateway).
const (
	gatewayNone  = ""      // the line echo
	gatewayHello = "hello" // hello → welcome
	gatewayMsg   = "msg"   // hello → welcome, then one msg → its ack
)

// gatewaySecretEnv names the environment variable holding the gateway secret.
const gatewaySecretEnv = "CORRAL_GATEWAY_SECRET"

// gatewayLineMax bounds a line read from the gateway (a welcome or an ack is ~100 bytes).
const gatewayLineMax = 4096

// deviceToken is the token a device proves itself with: hex HMAC-SHA256 of its id under the
// secret, as deviceToken in examples/amqp-gateway/src/auth.ts.
func deviceToken(secret, device string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(device))
	return hex.EncodeToString(m.Sum(nil))
}

// checkGateway validates -gateway and reads the secret it needs from the environment.
func (o *options) checkGateway() {
	switch o.gateway {
	case gatewayNone:
		return
	case gatewayHello, gatewayMsg:
	default:
		fatalf("-gateway %q: want hello or msg (or nothing: the line echo)", o.gateway)
	}
	o.secret = strings.TrimSpace(os.Getenv(gatewaySecretEnv))
	if o.secret == "" {
		fatalf("-gateway needs the gateway secret in the environment variable %s", gatewaySecretEnv)
	}
	if o.devicePrefix == "" {
		fatalf("-device-prefix must not be empty")
	}
}

// deviceID is the gateway device id of the device connecting from src (one address per device
// in a storm): <prefix>-127_60_1_1. Ids allow [A-Za-z0-9_:-] only. Subcommands whose devices
// share addresses (fleet, capacity) so share ids, and a gateway takes the older session over;
// probe gives each sample an id of its own instead.
func (o *options) deviceID(src string) string {
	return o.devicePrefix + "-" + strings.ReplaceAll(src, ".", "_")
}

// gatewayLine is what the benchmark reads of a gateway line.
type gatewayLine struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
}

// gatewayExchange runs the device side of the exchange (mode gatewayHello or gatewayMsg) on an
// established connection. It returns "" on success, else why it failed: a reason of classify
// (deadline, closed, error) for the transport, "mismatch" for a line that is not the answer
// expected, "gateway:<code>" when the gateway sent an error line (unauthorized, overloaded, …),
// "nack" when it refused the message; and at which stage: "welcome" (the hello sent, its
// welcome awaited) or "ack" (the msg sent, its ack awaited).
func gatewayExchange(rw io.ReadWriter, mode, device, secret string) (reason, stage string) {
	hello, _ := json.Marshal(map[string]string{"type": "hello", "device": device, "token": deviceToken(secret, device)})
	if _, err := rw.Write(append(hello, '\n')); err != nil {
		return classify(err), "welcome"
	}
	r := bufio.NewReaderSize(rw, 512)
	if reason := expect(r, "welcome", ""); reason != "" {
		return reason, "welcome"
	}
	if mode != gatewayMsg {
		return "", ""
	}
	if _, err := io.WriteString(rw, `{"type":"msg","id":"m-1","topic":"t","body":1}`+"\n"); err != nil {
		return classify(err), "ack"
	}
	if reason := expect(r, "ack", "m-1"); reason != "" {
		return reason, "ack"
	}
	return "", ""
}

// expect reads one line and checks it is a gateway message of type want (with id, when given).
func expect(r *bufio.Reader, want, id string) string {
	line, err := readGatewayLine(r)
	if err != nil {
		return classify(err)
	}
	var m gatewayLine
	if json.Unmarshal(line, &m) != nil {
		return "mismatch"
	}
	switch {
	case m.Type == "error":
		return m.errorReason()
	case want == "ack" && m.Type == "nack":
		return "nack"
	case m.Type != want, id != "" && m.ID != id:
		return "mismatch"
	}
	return ""
}

// errorReason names an error line from the gateway: gateway:<code> (gateway:error without a code).
func (m gatewayLine) errorReason() string {
	if m.Code == "" {
		return "gateway:error"
	}
	return "gateway:" + m.Code
}

// readGatewayLine reads one line (without its newline); a line longer than gatewayLineMax is an error.
func readGatewayLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			return line[:len(line)-1], nil
		}
		if err != bufio.ErrBufferFull {
			return line, err
		}
		if len(line) > gatewayLineMax {
			return line, fmt.Errorf("a line from the gateway is longer than %d bytes", gatewayLineMax)
		}
	}
}
