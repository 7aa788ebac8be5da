// Command pause is the rig node's pod sandbox process (what registry.k8s.io/pause is, which cannot be
// pulled here): it holds the pod's namespaces, reaps orphaned children as PID 1 and exits on SIGINT or
// SIGTERM. A static Go binary in an image of its own (test/controlplane/build-node.sh).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
