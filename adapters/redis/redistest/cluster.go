package redistest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ClusterOptions configure a cluster.
type ClusterOptions struct {
	// Masters is the number of master nodes; default 3 (the minimum
	// redis-cli --cluster create accepts).
	Masters int
	// Replicas is the number of replicas of each master; default 0.
	Replicas int
	// AppendFsync is "always" (default), "everysec" or "no".
	AppendFsync string
}

// Cluster is a Redis Cluster of redis-server processes on loopback.
type Cluster struct {
	Nodes []*Node
}

// Node is one redis-server process started with extra arguments.
type Node struct {
	Addr string // 127.0.0.1:port
	Port int

	tb   testing.TB
	bin  string
	dir  string
	args []string
	cmd  *exec.Cmd
	done chan struct{}
}

// Addrs returns the addresses of every node (masters and replicas), the
// seed list of a ClusterClient.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr
	}
	return out
}

// StartCluster starts Masters*(1+Replicas) nodes with cluster-enabled and
// AOF, joins them with redis-cli --cluster create, waits until every node
// reports cluster_state:ok and agrees on the slot map, and registers the
// shutdown with tb. Without redis-server or redis-cli it fails the test, or
// skips it under -short.
func StartCluster(tb testing.TB, opt ClusterOptions) *Cluster {
	tb.Helper()
	bin := Binary()
	cli, _ := exec.LookPath("redis-cli")
	if bin == "" || cli == "" {
		if testing.Short() {
			tb.Skip("redis-server or redis-cli is not installed; skipped under -short")
		}
		tb.Fatal("redis-server and redis-cli must be on PATH: install them (apt-get install -y redis-server) or run the tests with -short to skip the Redis tests")
	}
	if opt.Masters == 0 {
		opt.Masters = 3
	}
	if opt.AppendFsync == "" {
		opt.AppendFsync = "always"
	}
	n := opt.Masters * (1 + opt.Replicas)
	ports := freePorts(tb, n, true)
	c := &Cluster{}
	tb.Cleanup(c.Stop)
	for _, p := range ports {
		dir := tb.TempDir()
		nd := &Node{tb: tb, bin: bin, dir: dir, Port: p, Addr: "127.0.0.1:" + strconv.Itoa(p), args: []string{
			"--port", strconv.Itoa(p),
			"--bind", "127.0.0.1",
			"--dir", dir,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
			"--cluster-node-timeout", "2000",
			"--appendonly", "yes",
			"--appendfsync", opt.AppendFsync,
			"--save", "",
			"--daemonize", "no",
			"--protected-mode", "no",
			"--logfile", filepath.Join(dir, "redis.log"),
		}}
		nd.start()
		c.Nodes = append(c.Nodes, nd)
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", strconv.Itoa(opt.Replicas), "--cluster-yes")
	out, err := exec.Command(cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.ready(opt)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			tb.Fatalf("cluster not ready after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready checks that every node says cluster_state:ok and knows all masters
// and replicas, and that every replica's link to its master is up.
func (c *Cluster) ready(opt ClusterOptions) error {
	for _, n := range c.Nodes {
		info, err := command(n.Addr, "CLUSTER", "INFO")
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster_state is not ok", n.Addr)
		}
		if !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(len(c.Nodes))+"\r") {
			return fmt.Errorf("%s does not know every node yet", n.Addr)
		}
		if !strings.Contains(info, "cluster_size:"+strconv.Itoa(opt.Masters)+"\r") {
			return fmt.Errorf("%s does not see %d masters with slots yet", n.Addr, opt.Masters)
		}
		repl, err := command(n.Addr, "INFO", "replication")
		if err != nil {
			return err
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica link is not up", n.Addr)
		}
	}
	return nil
}

// Stop kills every node.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		n.Kill9()
	}
}

// freePorts returns n distinct free loopback ports; with bus, each port p
// has p+10000 (the cluster bus port) free too. It holds every listener until
// all are found, so the ports are distinct.
func freePorts(tb testing.TB, n int, bus bool) []int {
	tb.Helper()
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	var ports []int
	for tries := 0; len(ports) < n; tries++ {
		if tries > 1000 {
			tb.Fatalf("no %d free loopback ports with a free bus port (+10000)", n)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("no free loopback port: %v", err)
		}
		held = append(held, l)
		p := l.Addr().(*net.TCPAddr).Port
		if !bus {
			ports = append(ports, p)
			continue
		}
		if p+10000 > 65535 {
			continue
		}
		bl, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		if err != nil {
			continue
		}
		held = append(held, bl)
		ports = append(ports, p)
	}
	return ports
}

func (n *Node) start() {
	n.tb.Helper()
	n.cmd = exec.Command(n.bin, n.args...)
	if err := n.cmd.Start(); err != nil {
		n.tb.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	n.done = done
	cmd := n.cmd
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := ping(n.Addr); err == nil {
			return
		} else if time.Now().After(deadline) {
			n.tb.Fatalf("redis-server on %s not ready: %v\n%s", n.Addr, err, n.Log())
		}
		select {
		case <-done:
			n.tb.Fatalf("redis-server on %s exited at start:\n%s", n.Addr, n.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Log returns the node's log file.
func (n *Node) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "redis.log"))
	return string(b)
}

// Kill9 kills the node with SIGKILL and waits for it to exit.
func (n *Node) Kill9() {
	if n.cmd == nil {
		return
	}
	n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
}

// Dir is the node's data directory.
func (n *Node) Dir() string { return n.dir }

// command sends one command in RESP and returns a bulk or simple string
// reply; errors replies become errors.
func command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("%s: %s", addr, line[1:])
	case strings.HasPrefix(line, "$"):
		size, err := strconv.Atoi(line[1:])
		if err != nil || size < 0 {
			return "", fmt.Errorf("%s: unexpected reply %q", addr, line)
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:size]), nil
	}
	return "", fmt.Errorf("%s: unexpected reply %q", addr, line)
}
