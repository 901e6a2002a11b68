// Package bench holds Drover's benchmarks. They run against real control planes (a
// hub and up to ten targets, started with package controlplane) and a real manager
// process with its default settings, and print their figures; they never assert
// timings. They run only when selected with -bench, as `make bench` does:
//
//	KUBEBUILDER_ASSETS="$(hack/kubebin.sh)" go test ./bench/ -run '^$' -bench . -benchtime 1x -count=1 -timeout 30m
//
// Without -bench (as in `make test`) nothing is started. docs/managedclusters.md
// explains what each figure means and lists the latest results.
//
// BenchmarkScale runs one manager against 10, 100 and 1,000 simulated clusters
// (package simcluster) only when DROVER_BENCH_SCALE is set, as `make bench-scale`
// does; docs/performance.md#scale has its figures.
package bench
