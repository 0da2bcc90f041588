// Command pause is the sandbox ("pause") container of the Kubernetes lab (scripts/k8s-lab.sh):
// it holds a pod's namespaces open until it is told to stop. The lab builds it from source so
// that no image is pulled from the internet; containerd's sandbox_image names it.
//
// As PID 1 of a pod that shares its process namespace it also reaps orphaned children, as the
// upstream pause does, so they do not linger as zombies.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that has exited; WNOHANG so a live one does not block the loop.
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
