// Command etcd is etcd's own entry point (go.etcd.io/etcd/server/v3/etcdmain) at the version the pinned
// k8s.io/kubernetes release requires, so the API server and its storage come from one module graph.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
