// Command etcdutl is the upstream etcd administration tool (snapshot status and
// restore), built from the module proxy: etcd 3.6's etcdctl no longer restores.
package main

import (
	"os"

	"github.com/spf13/cobra"
	"go.etcd.io/etcd/etcdutl/v3/etcdutl"
)

func main() {
	root := &cobra.Command{Use: "etcdutl", Short: "An administrative command line tool for etcd3."}
	root.PersistentFlags().StringVarP(&etcdutl.OutputFormat, "write-out", "w", "simple", "set the output format (fields, json, protobuf, simple, table)")
	root.AddCommand(etcdutl.NewSnapshotCommand(), etcdutl.NewVersionCommand(), etcdutl.NewDefragCommand(), etcdutl.NewHashKVCommand())
	if err := root.Execute(); err != nil {
		os.Exit(1)
	}
}
