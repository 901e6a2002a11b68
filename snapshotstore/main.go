package snapshotstore

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"
)

// Command is the subcommand of drover that the planner's instructions run.
const Command = "etcd-snapshot-s3"

// Main is `drover etcd-snapshot-s3 upload|download`, run on an etcd node by its
// plan:
//
//	drover etcd-snapshot-s3 upload --config F --file F --name N --cluster C --retention K
//	drover etcd-snapshot-s3 download --config F --file F --name N
//
// upload stores the file as snapshot N, checks it, then deletes cluster C's
// snapshots beyond the newest K. download fetches snapshot N into the file and
// checks its sha256. Neither prints credentials.
func Main(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "upload" && args[0] != "download") {
		return errors.New("usage: drover " + Command + " upload|download --config FILE --file FILE --name NAME [--cluster NAME --retention N]")
	}
	verb := args[0]
	fs := flag.NewFlagSet("drover "+Command+" "+verb, flag.ContinueOnError)
	config := fs.String("config", "", "the storage's configuration (JSON, from the node's plan)")
	file := fs.String("file", "", "the snapshot file on this node")
	name := fs.String("name", "", "the snapshot's name, <cluster>-<YYYYMMDD-HHMMSS>")
	cluster := fs.String("cluster", "", "upload: the cluster whose older snapshots are pruned")
	retention := fs.Int("retention", 0, "upload: how many of the cluster's snapshots the folder keeps (0: prune nothing)")
	timeout := fs.Duration("timeout", 9*time.Minute, "give up after this long")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", verb, fs.Arg(0))
	}
	if *config == "" || *file == "" || *name == "" {
		return fmt.Errorf("%s: --config, --file and --name are required", verb)
	}
	cfg, err := ReadConfig(*config)
	if err != nil {
		return err
	}
	s, err := Open(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if verb == "download" {
		d, err := s.Download(ctx, *name, *file)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "downloaded %s to %s (%d bytes, sha256 %s)\n", d.URL, *file, d.Size, d.SHA256)
		return err
	}
	u, err := s.Upload(ctx, *file, *name)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "uploaded %s (%d bytes, sha256 %s)\n", u.URL, u.Size, u.SHA256); err != nil {
		return err
	}
	if *retention > 0 && *cluster != "" {
		deleted, err := s.Prune(ctx, *cluster, *retention)
		for _, d := range deleted {
			_, _ = fmt.Fprintf(stdout, "deleted %s (retention %d)\n", d, *retention)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
