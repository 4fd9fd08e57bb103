// grpc_check: stock grpc-go with default dial options against the daemons'
// Unix sockets. It asks grpc.health.v1 Health/Check (with -health SERVICE)
// and lists the services by server reflection v1alpha, then checks that
// every -expect name is among them.
//
// Debian 12's grpc-go (golang-google-grpc-dev 1.33) dials "unix://PATH"
// targets itself and sends an :authority h2 accepts; clients that send the
// socket path instead (grpcio) are served through the daemons' adapter.
//
// Built in GOPATH mode from Debian's packages (tests/grpc-clients.sh):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o grpc_check examples/go/grpc_check.go
//	grpc_check -health trigger.v1.TriggerService -expect trigger.v1.TriggerService unix:///run/trigger-db/trigger.sock
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
)

func main() {
	health := flag.String("health", "", "ask Health/Check for this service")
	expect := flag.String("expect", "", "comma-separated services reflection must list")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: grpc_check [-health SERVICE] [-expect A,B] unix:///path/to/socket")
		os.Exit(2)
	}
	target := flag.Arg(0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("dial %s: %v", target, err)
	}
	defer conn.Close()

	if *health != "" {
		r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: *health})
		if err != nil {
			fail("Health/Check %s: %v", *health, err)
		}
		fmt.Printf("health %s: %s\n", *health, r.GetStatus())
		if r.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			fail("%s is not SERVING", *health)
		}
	}

	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		fail("reflection v1alpha: %v", err)
	}
	req := &rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{ListServices: "*"}}
	if err := stream.Send(req); err != nil {
		fail("reflection v1alpha send: %v", err)
	}
	resp, err := stream.Recv()
	if err != nil {
		fail("reflection v1alpha: %v", err)
	}
	listed := map[string]bool{}
	for _, s := range resp.GetListServicesResponse().GetService() {
		fmt.Println(s.GetName())
		listed[s.GetName()] = true
	}
	for _, want := range strings.Split(*expect, ",") {
		if want != "" && !listed[want] {
			fail("reflection does not list %s", want)
		}
	}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "grpc_check: "+format+"\n", args...)
	os.Exit(1)
}
