// etcd's own main (go.etcd.io/etcd/v3 main.go) over the server module: that module replaces
// its siblings by path, so it cannot be built from the proxy; this one can.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
