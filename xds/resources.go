package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthz "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Names of the HTTP filters, in the order of the chain.
const (
	FilterJWTAuthn = "envoy.filters.http.jwt_authn"
	FilterExtAuthz = wellknown.HTTPExternalAuthorization
	FilterRouter   = wellknown.Router
)

// http2Options is the key of a cluster's typed_extension_protocol_options
// for its upstream HTTP protocol.
const http2Options = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// clusterConnectTimeout bounds connecting to the upstream and the sidecar,
// both on the same host or pod.
const clusterConnectTimeout = 250 * time.Millisecond

// errNoKeys: the keys of an issuer a node's jwt_authn names are not loaded
// yet, so its resources wait.
var errNoKeys = errors.New("no keys loaded yet")

// Names of a node's resources, all derived from its service.
func listenerName(service string) string { return service + "-ingress" }
func routeName(service string) string    { return service + "-routes" }
func upstreamName(service string) string { return service + "-upstream" }
func sidecarName(service string) string  { return service + "-meshauth" }

// resources are the xDS resources of one Node, each type with the version
// of its content, and the cache snapshot of them that every node of the
// entry shares. Sharing is safe: the cache fills a snapshot's version map
// (for delta streams) only under its own exclusive lock.
type resources struct {
	byType   map[resource.Type][]cachetypes.Resource
	versions map[resource.Type]string
	snapshot *cachev3.Snapshot
}

// buildResources returns the listener, route configuration and clusters of
// n. jwks holds the JWK Set document of each issuer n's jwt_authn names.
// Every resource and every typed config passes its Validate, and the result
// is a consistent snapshot.
func buildResources(n *Node, jwks map[string][]byte) (*resources, error) {
	filters, err := httpFilters(n, jwks)
	if err != nil {
		return nil, err
	}
	manager := &hcm.HttpConnectionManager{
		StatPrefix: n.Service,
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource: &core.ConfigSource{
				ResourceApiVersion:    core.ApiVersion_V3,
				ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
			},
			RouteConfigName: routeName(n.Service),
		}},
		HttpFilters: filters,
		// The sidecar matches its routes on the path percent-decoded, with
		// dot segments and repeated slashes removed; have Envoy route and
		// forward that same path, so that "/public/..%2Fadmin" cannot be
		// judged as one path and served as another.
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD,
	}
	managerAny, err := pack(manager)
	if err != nil {
		return nil, err
	}
	addr, err := socketAddress(n.Listen)
	if err != nil {
		return nil, err
	}
	lis := &listener.Listener{
		Name:    listenerName(n.Service),
		Address: addr,
		FilterChains: []*listener.FilterChain{{
			Filters: []*listener.Filter{{
				Name:       wellknown.HTTPConnectionManager,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: managerAny},
			}},
		}},
	}
	routes := &route.RouteConfiguration{
		Name: routeName(n.Service),
		VirtualHosts: []*route.VirtualHost{{
			Name:    n.Service,
			Domains: []string{"*"},
			Routes: []*route.Route{{
				Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_Route{Route: &route.RouteAction{
					ClusterSpecifier: &route.RouteAction_Cluster{Cluster: upstreamName(n.Service)},
				}},
			}},
		}},
	}
	upstream, err := staticCluster(upstreamName(n.Service), n.Upstream, false)
	if err != nil {
		return nil, err
	}
	sidecar, err := staticCluster(sidecarName(n.Service), n.ExtAuthz, true)
	if err != nil {
		return nil, err
	}

	r := &resources{
		byType: map[resource.Type][]cachetypes.Resource{
			resource.ListenerType: {lis},
			resource.RouteType:    {routes},
			resource.ClusterType:  {upstream, sidecar},
		},
		versions: map[resource.Type]string{},
	}
	for typ, items := range r.byType {
		h := sha256.New()
		for _, item := range items {
			if err := validate(item); err != nil {
				return nil, err
			}
			// Deterministic, so that the same content has the same version
			// and a refresh that brings the same keys pushes nothing.
			b, err := proto.MarshalOptions{Deterministic: true}.Marshal(item)
			if err != nil {
				return nil, fmt.Errorf("encode %s: %w", cachev3.GetResourceName(item), err)
			}
			h.Write(b)
		}
		r.versions[typ] = hex.EncodeToString(h.Sum(nil)[:8])
	}
	r.snapshot = new(cachev3.Snapshot)
	for typ, items := range r.byType {
		r.snapshot.Resources[cachev3.GetResponseType(typ)] = cachev3.NewResources(r.versions[typ], items)
	}
	if err := r.snapshot.Consistent(); err != nil {
		return nil, fmt.Errorf("service %s: inconsistent snapshot: %w", n.Service, err)
	}
	return r, nil
}

// httpFilters returns the HTTP filter chain of n: jwt_authn (if
// configured), ext_authz, router. The router comes last so that no request
// reaches the upstream unjudged.
func httpFilters(n *Node, jwks map[string][]byte) ([]*hcm.HttpFilter, error) {
	var filters []*hcm.HttpFilter
	add := func(name string, m proto.Message) error {
		a, err := pack(m)
		if err != nil {
			return err
		}
		filters = append(filters, &hcm.HttpFilter{Name: name, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: a}})
		return nil
	}
	if n.JWTAuthn != nil {
		authn, err := jwtAuthentication(n.JWTAuthn, jwks)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", n.Service, err)
		}
		if err := add(FilterJWTAuthn, authn); err != nil {
			return nil, err
		}
	}
	authz := &extauthz.ExtAuthz{
		TransportApiVersion: core.ApiVersion_V3,
		Services: &extauthz.ExtAuthz_GrpcService{GrpcService: &core.GrpcService{
			TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: sidecarName(n.Service)}},
			Timeout:         durationpb.New(n.ExtAuthzTimeout),
		}},
		// If the sidecar cannot be asked, refuse: never let a request
		// through unverified.
		FailureModeAllow: false,
		StatusOnError:    &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
	}
	if err := add(FilterExtAuthz, authz); err != nil {
		return nil, err
	}
	if err := add(FilterRouter, &router.Router{}); err != nil {
		return nil, err
	}
	return filters, nil
}

// jwtAuthentication configures jwt_authn with one provider per issuer, its
// current keys inline. A request must carry a token that one provider
// accepts; unless RequireToken, one without a token goes on to ext_authz,
// which decides by its route policy (public routes). A token that fails
// verification is refused either way.
func jwtAuthentication(j *JWTAuthn, jwks map[string][]byte) (*jwtauthn.JwtAuthentication, error) {
	authn := &jwtauthn.JwtAuthentication{Providers: map[string]*jwtauthn.JwtProvider{}}
	var requirements []*jwtauthn.JwtRequirement
	for i, iss := range j.Issuers {
		doc, ok := jwks[iss]
		if !ok {
			return nil, fmt.Errorf("issuer %s: %w", iss, errNoKeys)
		}
		name := "issuer-" + strconv.Itoa(i)
		authn.Providers[name] = &jwtauthn.JwtProvider{
			Issuer:    iss,
			Audiences: j.Audiences,
			JwksSourceSpecifier: &jwtauthn.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
				Specifier: &core.DataSource_InlineString{InlineString: string(doc)},
			}},
			// The sidecar verifies the token again, by every rule:
			// keep it in the request.
			Forward:              true,
			ForwardPayloadHeader: j.ForwardPayloadHeader,
		}
		requirements = append(requirements, &jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_ProviderName{ProviderName: name}})
	}
	if !j.RequireToken {
		requirements = append(requirements, &jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}})
	}
	req := requirements[0]
	if len(requirements) > 1 {
		req = &jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_RequiresAny{
			RequiresAny: &jwtauthn.JwtRequirementOrList{Requirements: requirements},
		}}
	}
	authn.Rules = []*jwtauthn.RequirementRule{{
		Match:           &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		RequirementType: &jwtauthn.RequirementRule_Requires{Requires: req},
	}}
	return authn, nil
}

// staticCluster returns a cluster of the one endpoint at hostPort:
// STATIC for an IP address, STRICT_DNS for a name. http2 is for gRPC.
func staticCluster(name, hostPort string, http2 bool) (*cluster.Cluster, error) {
	addr, err := socketAddress(hostPort)
	if err != nil {
		return nil, err
	}
	discovery := cluster.Cluster_STATIC
	if _, err := netip.ParseAddr(addr.GetSocketAddress().GetAddress()); err != nil {
		discovery = cluster.Cluster_STRICT_DNS
	}
	c := &cluster.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(clusterConnectTimeout),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: discovery},
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: addr}},
				}},
			}},
		},
	}
	if http2 {
		opts, err := pack(&upstreamhttp.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{
				ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
						Http2ProtocolOptions: &core.Http2ProtocolOptions{},
					},
				},
			},
		})
		if err != nil {
			return nil, err
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{http2Options: opts}
	}
	return c, nil
}

func socketAddress(hostPort string) (*core.Address, error) {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", hostPort, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("address %q: port: %w", hostPort, err)
	}
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address:       host,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(p)},
	}}}, nil
}

// validator is what protoc-gen-validate generates for every Envoy message.
type validator interface{ ValidateAll() error }

func validate(m proto.Message) error {
	v, ok := m.(validator)
	if !ok {
		return fmt.Errorf("%T has no validation", m)
	}
	if err := v.ValidateAll(); err != nil {
		return fmt.Errorf("invalid %T: %w", m, err)
	}
	return nil
}

// pack validates m and wraps it in an Any, deterministically encoded (map
// fields such as jwt_authn's providers in key order).
func pack(m proto.Message) (*anypb.Any, error) {
	if err := validate(m); err != nil {
		return nil, err
	}
	a := new(anypb.Any)
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return a, nil
}
