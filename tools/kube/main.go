// Command kube is one multi-call binary holding etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl.
//
// They share almost all of their dependency graph, so one binary is compiled and
// linked once instead of five times (minutes saved on a small machine). The
// component is chosen by the first argument (`kube apiserver --etcd-servers=...`)
// or, busybox-style, by the name the binary was invoked as (a `kubectl` symlink).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"

	// kubectl's own main imports the client auth plugins (exec, oidc) for their side effects.
	_ "k8s.io/client-go/plugin/pkg/client/auth"
)

// components maps every accepted name to a runner; the kube-* aliases match the upstream
// binary names so symlinks called like the real programs work.
var components = map[string]func() int{
	"etcd":                    runEtcd,
	"apiserver":               func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"kube-apiserver":          func() int { return cli.Run(apiserver.NewAPIServerCommand()) },
	"controller-manager":      func() int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
	"kube-controller-manager": func() int { return cli.Run(controllermanager.NewControllerManagerCommand()) },
	"scheduler":               func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kube-scheduler":          func() int { return cli.Run(scheduler.NewSchedulerCommand()) },
	"kubelet":                 func() int { return cli.Run(kubelet.NewKubeletCommand()) },
	"kube-proxy":              func() int { return cli.Run(proxy.NewProxyCommand()) },
	"kubectl":                 runKubectl,
}

func runEtcd() int {
	// etcdmain.Main exits the process itself on error and reads flags from args[1:].
	etcdmain.Main(os.Args)
	return 0
}

func runKubectl() int {
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		// kubectl prints its own errors in its own format, like upstream's main.
		kubectlutil.CheckErr(err)
	}
	return 0
}

func usage() {
	names := make([]string, 0, len(components))
	for name := range components {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprintf(os.Stderr, "usage: kube <component> [flags]\ncomponents: %s\n", strings.Join(names, ", "))
}

func main() {
	name := filepath.Base(os.Args[0])
	if _, ok := components[name]; !ok {
		if len(os.Args) < 2 {
			usage()
			os.Exit(2)
		}
		name = os.Args[1]
		// Every component parses os.Args[1:] (cobra by default, etcdmain explicitly), so
		// drop the dispatch word and present the component's name as argv[0].
		os.Args = append([]string{name}, os.Args[2:]...)
	}
	run, ok := components[name]
	if !ok {
		usage()
		os.Exit(2)
	}
	os.Exit(run())
}
