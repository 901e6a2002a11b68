// Command tiny is the only program in the container images that the hosts harness
// builds, since no registry is reachable here: a static binary, so an image needs
// nothing else.
//
//	tiny pause          what the pause image runs: the pod sandbox's first process. It
//	                    reaps orphans and exits on SIGTERM or SIGINT, as upstream's does.
//	tiny serve ADDR     an HTTP server that answers "tiny on <hostname>", for test pods.
package main

import (
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tiny pause | tiny serve ADDR")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "pause":
		pause()
	case "serve":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: tiny serve ADDR")
			os.Exit(2)
		}
		serve(os.Args[2])
	default:
		fmt.Fprintf(os.Stderr, "tiny: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}

func pause() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}

func serve(addr string) {
	host, _ := os.Hostname()
	fmt.Printf("tiny on %s serving %s\n", host, addr)
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "tiny on %s\n", host)
	})
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 10 * time.Second}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		os.Exit(0)
	}()
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
