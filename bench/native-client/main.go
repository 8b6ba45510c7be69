// Command corral-load is the benchmark's native load client: TLS devices on loopback that cost
// far less CPU per handshake than a Node client, so that on a small machine the server, not the
// client, is what a storm or an overload measures.
//
//	corral-load storm    -port N -devices N [-reconnect [-resume]] ...  a reconnect storm
//	corral-load overload -port N -rate R -seconds T ...                 open-loop arrivals
//	corral-load capacity -port N -concurrency C -seconds T ...          closed-loop handshakes per second
//	corral-load silent   -port N -count N -kind K ...                   hostile peers held open
//	corral-load probe    -port N -samples S ...                         sequential service latency
//	corral-load fleet    -port N -devices N -rate R -addresses A ...    devices arriving steadily from a few addresses
//	corral-load attack   -port N -rate R -seconds T ...                 ClientHellos from one address, as fast as asked
//	corral-load uplink   -port N -devices N -rate R -msgs M ...         the gateway's uplink, as its simulator drives it
//
// The connecting subcommands (storm, probe, overload, capacity, fleet) speak examples/amqp-gateway's
// device protocol instead of the line echo with -gateway hello|msg (gateway.go; the secret from
// $CORRAL_GATEWAY_SECRET).
//
// Every subcommand ends by itself (-max-seconds at the latest), writes progress to stderr and
// prints its result as one JSON line on stdout, tagged "t":"done" (a few print earlier lines,
// tagged otherwise, as their docs say). Each result carries the client's own CPU time (user +
// system, µs) and the handshakes it completed (full and resumed), so that a runner can report the
// client's CPU per handshake. With -stdin, the process also reads commands from stdin (one per
// line: "storm", "stop") and takes the end of stdin as "stop": the runner that started it is gone.
//
// Standard library only; see bench/lib/native-client.ts for how the benchmark builds and runs it.
package main

import (
	"fmt"
	"math/rand"
	"os"
	"time"
)

const usage = `usage: corral-load <storm|overload|capacity|silent|probe|fleet|attack|uplink> [flags]
run "corral-load <subcommand> -h" for the flags of one subcommand
`

func main() {
	rand.Seed(time.Now().UnixNano())
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "storm":
		runStorm(args)
	case "overload":
		runOverload(args)
	case "capacity":
		runCapacity(args)
	case "silent":
		runSilent(args)
	case "probe":
		runProbe(args)
	case "fleet":
		runFleet(args)
	case "attack":
		runAttack(args)
	case "uplink":
		runUplink(args)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
}
