package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// cpuPlan splits the machine's CPUs between PHP (nginx and php-fpm) and everything else (this
// tool, the bridge and wrk), for -php-cpus. On a small machine every process otherwise competes
// for the same cores, and the webhook scenario's ratio then measures how much CPU the bridge and
// the tool's clients take from PHP rather than whether the bridge keeps PHP busy. With PHP on
// cores of its own, in both the bridge run and the wrk run, PHP has the same resources in both,
// as it would next to a sidecar on a production host.
type cpuPlan struct {
	php, rest string // taskset -c lists; empty: not pinned
}

// parseCPUPlan reads a comma-separated list of CPU numbers for PHP, out of 0..ncpu-1; the other
// CPUs go to everything else. Both sides must be non-empty.
func parseCPUPlan(list string, ncpu int) (cpuPlan, error) {
	if list == "" {
		return cpuPlan{}, nil
	}
	var php []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 0 || n >= ncpu {
			return cpuPlan{}, fmt.Errorf("-php-cpus %q: %q is not a CPU number within 0..%d", list, f, ncpu-1)
		}
		if !slices.Contains(php, n) {
			php = append(php, n)
		}
	}
	var rest []string
	for n := range ncpu {
		if !slices.Contains(php, n) {
			rest = append(rest, strconv.Itoa(n))
		}
	}
	if len(rest) == 0 {
		return cpuPlan{}, fmt.Errorf("-php-cpus %q leaves no CPU for the bridge and this tool (the machine has %d)", list, ncpu)
	}
	slices.Sort(php)
	phpS := make([]string, len(php))
	for i, n := range php {
		phpS[i] = strconv.Itoa(n)
	}
	return cpuPlan{php: strings.Join(phpS, ","), rest: strings.Join(rest, ",")}, nil
}

// pinned returns bin and args, run on cpus through taskset (which execs the program, so the
// pid is the program's) when cpus is set.
func pinned(cpus, bin string, args ...string) (string, []string) {
	if cpus == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", cpus, bin}, args...)
}

// pinSelf moves every thread of this process to cpus. Threads and children started later
// inherit the mask. GOMAXPROCS follows: Go sized it from the CPUs it had at start, and more Ps
// than CPUs only adds scheduler spinning against the bridge on the same cores.
func pinSelf(cpus string) error {
	if cpus == "" {
		return nil
	}
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).CombinedOutput()
	if err != nil {
		return fmt.Errorf("taskset -a -p -c %s: %w: %s", cpus, err, out)
	}
	runtime.GOMAXPROCS(strings.Count(cpus, ",") + 1)
	return nil
}

// checkTaskset makes sure taskset (util-linux) is there before anything starts.
func checkTaskset(p cpuPlan) error {
	if p.php == "" {
		return nil
	}
	if _, err := exec.LookPath("taskset"); err != nil {
		return errors.New("-php-cpus needs taskset: apt-get install -y util-linux")
	}
	return nil
}
