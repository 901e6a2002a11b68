// Command hosts makes test hosts on this machine by hand, with internal/hosts: the
// same hosts the tests use, for trying things out in them.
//
//	go run ./hack/hosts up [-n 3] [-names a,b,c]   make hosts, print how to enter them,
//	                                               tear them down on Ctrl-C or SIGTERM
//	go run ./hack/hosts enter RUN HOST [CMD...]    run CMD (default bash) in a host (by its
//	                                               ID) of a live run, in its namespaces and cgroup
//	go run ./hack/hosts ls                         list the runs on this machine
//	go run ./hack/hosts clean                      tear down what dead runs left behind
//	go run ./hack/hosts images DIR [-pause REF]    write the pause image (named REF) and
//	                                               the tiny test image as OCI archives
//
// It needs root. See docs/hosts.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/drover-io/drover/internal/hosts"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "hosts:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: hosts up [-n N] [-names a,b] | enter RUN HOST [CMD...] | ls | clean | images DIR [-pause REF]")
	}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	switch args[0] {
	case "up":
		fs := flag.NewFlagSet("up", flag.ContinueOnError)
		n := fs.Int("n", 3, "how many hosts")
		names := fs.String("names", "", "comma-separated hostnames (default host-0, host-1, ...)")
		dir := fs.String("dir", "", "where the runs' data directories go (default $DROVER_HOSTS_DIR or /tmp/drover-hosts)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		opts := hosts.Options{BaseDir: *dir, Logf: logf}
		if *names != "" {
			opts.Names = strings.Split(*names, ",")
			*n = len(opts.Names)
		}
		return up(*n, opts)
	case "enter":
		if len(args) < 3 {
			return fmt.Errorf("usage: hosts enter RUN HOST [CMD...]")
		}
		h, err := hosts.Attach(args[1], args[2])
		if err != nil {
			return err
		}
		cmdline := args[3:]
		if len(cmdline) == 0 {
			cmdline = []string{"bash"}
		}
		cmd := h.Command(context.Background(), cmdline[0], cmdline[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		return cmd.Run()
	case "ls":
		return hosts.List(os.Stdout)
	case "clean":
		return hosts.Clean(logf)
	case "images":
		fs := flag.NewFlagSet("images", flag.ContinueOnError)
		pause := fs.String("pause", hosts.PauseImage, "the pause image's name")
		if len(args) < 2 {
			return fmt.Errorf("usage: hosts images DIR [-pause REF]")
		}
		if err := fs.Parse(args[2:]); err != nil {
			return err
		}
		written, err := hosts.WriteImages(args[1], *pause)
		for _, p := range written {
			fmt.Println(p)
		}
		return err
	default:
		return fmt.Errorf("unknown command %q: up, enter, ls, clean or images", args[0])
	}
}

func up(n int, opts hosts.Options) error {
	// Signals are caught before the hosts exist, so that none interrupts their making.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	s, err := hosts.New(n, opts)
	if err != nil {
		return err
	}
	fmt.Printf("run %s: bridge %s, subnet %s; the hosts reach this machine at %s\n\n", s.Run, s.Bridge, s.Subnet, s.Gateway)
	fmt.Printf("%-12s %-15s %s\n", "HOST", "IP", "ENTER WITH")
	for _, h := range s.Hosts {
		fmt.Printf("%-12s %-15s go run ./hack/hosts enter %s %s\n", h.ID, h.IP, s.Run, h.ID)
	}
	fmt.Printf("\nData in %s; process logs in <host>/logs. Ctrl-C tears everything down.\n", s.Dir)
	<-sigs
	return s.Close()
}
