package dev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/krakenctl/krakenctl/server/api"
)

// removeEndpoints removes the endpoints file if it still lists exactly these origins: a file
// that another cluster has written since, or that is no longer ours to read, is left alone.
func removeEndpoints(path string, origins []string) error {
	e, err := api.ReadEndpoints(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("remove endpoints file: %w", err)
	}
	if !slices.Equal(e.Origins, origins) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove endpoints file: %w", err)
	}
	return nil
}
