package main

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/meshauth/meshauth/internal/grpcserve"
	"github.com/meshauth/meshauth/proxy"
)

// checkRequest is an ext_authz Check of GET /charge with authz as its
// Authorization field.
func checkRequest(authz string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/charge", Headers: map[string]string{"authorization": authz}},
	}}}
}

// TestSidecarExtAuthzGRPCLimits: the sidecar's ext_authz gRPC server, as
// its flags build it, refuses a Check larger than --grpc-max-recv-bytes
// and counts it, and answers the next Check.
func TestSidecarExtAuthzGRPCLimits(t *testing.T) {
	issuerURL := startIssuer(t)
	good := clientToken(t, issuerURL, "orders", "payments.charge", "payments")
	f := sidecarFlags{upstream: "http://127.0.0.1:1", audience: "payments", listen: "127.0.0.1:0", adminListen: freeAddr(t),
		extAuthzGRPC: freeAddr(t), forwardAuthPath: proxy.DefaultForwardAuthPath, upstreamTimeout: time.Second, grpc: grpcserve.ExtAuthzLimits()}
	f.trust = append(f.trust, issuerURL)
	startSidecar(t, &f, proxy.Policy{})
	waitReady(t, "http://"+f.adminListen+"/readyz")

	conn, err := grpc.NewClient(f.extAuthzGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := authv3.NewAuthorizationClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, checkRequest("Bearer "+strings.Repeat("x", 2<<20))); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a 2 MiB Check: %v", err)
	}
	resp, err := client.Check(ctx, checkRequest("Bearer "+good))
	if err != nil || resp.GetStatus().GetCode() != int32(codes.OK) {
		t.Fatalf("a Check after the oversized one: %v, %v", resp.GetStatus(), err)
	}
	if m := fetchBody(t, "http://"+f.adminListen+"/metrics"); !strings.Contains(m, `meshauth_grpc_oversized_messages_total{server="ext_authz"} 1`) {
		t.Errorf("metrics:\n%s", grepLines(m, "meshauth_grpc"))
	}
}
