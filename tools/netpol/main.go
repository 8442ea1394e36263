// Command netpol enforces NetworkPolicies on the test cluster's real node with the
// kube-network-policies controller (sigs.k8s.io/kube-network-policies), run as a host
// process beside the kubelet rather than as its privileged DaemonSet, which this machine
// cannot run.
//
// Upstream's command reads the in-cluster service-account config only; this one takes a
// kubeconfig. Pod addresses come from the API server (the node's containerd has no NRI
// socket). Everything else is the library's public NewController/Run, the
// same as upstream's cmd: new connections to or from a pod address on this node are queued
// to nfqueue and judged against the policies; the nftables table is removed on SIGTERM.
//
// Where the kernel has no nftables `queue` expression (CONFIG_NFT_QUEUE unset, as on the
// project's test machine) the controller's own table cannot be written: it logs that at each
// sync and judges whatever reaches its queue, and the harness steers the packets there with
// iptables' NFQUEUE target instead (energy_harness.localstack.node, NETPOL_CHAIN).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		kubeconfig string
		nodeName   string
		queueID    int
		metrics    string
		tableName  string
	)
	flag.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the API server (required)")
	flag.StringVar(&nodeName, "hostname-override", "", "the Node these pods run on (required)")
	flag.IntVar(&queueID, "nfqueue-id", 100, "nfqueue number the controller listens on")
	flag.StringVar(&metrics, "metrics-bind-address", "127.0.0.1:9080", "host:port of /metrics")
	flag.StringVar(&tableName, "nftables-table", "kube-network-policies",
		"name of the inet nftables table the controller owns")
	klog.InitFlags(nil)
	flag.Parse()
	if kubeconfig == "" || nodeName == "" {
		fmt.Fprintln(os.Stderr, "netpol: --kubeconfig and --hostname-override are required")
		return 2
	}
	if _, _, err := net.SplitHostPort(metrics); err != nil {
		fmt.Fprintf(os.Stderr, "netpol: --metrics-bind-address %q: %v\n", metrics, err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGINT, unix.SIGTERM)
	defer stop()

	config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netpol: kubeconfig %s: %v\n", kubeconfig, err)
		return 1
	}
	clientset, err := kubernetes.NewForConfig(config)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netpol: %v\n", err)
		return 1
	}
	factory := informers.NewSharedInformerFactory(clientset, 0)

	http.Handle("/metrics", promhttp.Handler())
	server := &http.Server{Addr: metrics, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := server.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "metrics server")
			stop()
		}
	}()

	controller, err := networkpolicy.NewController(
		clientset,
		factory.Networking().V1().NetworkPolicies(),
		factory.Core().V1().Namespaces(),
		factory.Core().V1().Pods(),
		nil, nil, nil, nil, // no (Baseline)AdminNetworkPolicy: alpha, not used here
		networkpolicy.Config{
			QueueID:     queueID,
			NodeName:    nodeName,
			NFTableName: tableName,
			// NRI stays "enabled" although containerd 1.6 serves no NRI socket: the plugin
			// then fails to connect (logged once) and knows no pod. Disabled, v0.8.0 leaves it
			// nil and dereferences it for any address that is no pod's (the node's own, say):
			// SIGSEGV at the first such packet, and every pod connection then dropped.
			NRIdisabled: false,
			// Its workaround for kernels before 6.12 (netfilter bug 1766, DNS replies racing
			// in conntrack) is more nftables rules; DNS passes our steering chain anyway.
			NetfilterBug1766Fix: false,
		},
	)
	if err != nil {
		fmt.Fprintf(os.Stderr, "netpol: %v\n", err)
		return 1
	}
	factory.Start(ctx.Done())
	// Run returns when ctx ends, after removing its nftables table (deferred inside Run).
	runErr := controller.Run(ctx)
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = server.Shutdown(shutdown)
	if runErr != nil && ctx.Err() == nil {
		fmt.Fprintf(os.Stderr, "netpol: controller stopped: %v\n", runErr)
		return 1
	}
	return 0
}
