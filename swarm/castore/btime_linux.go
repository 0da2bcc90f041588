package castore

import (
	"time"

	"golang.org/x/sys/unix"
)

// birthTime returns the birth time of the file at path (statx's btime), which a rename keeps:
// a committed blob's is when its temporary file was created, moments before the commit. ok is
// false where the file system (or an old kernel) does not record it.
func birthTime(path string) (t time.Time, ok bool) {
	var stx unix.Statx_t
	err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_BTIME, &stx)
	if err != nil || stx.Mask&unix.STATX_BTIME == 0 || stx.Btime.Sec == 0 && stx.Btime.Nsec == 0 {
		return time.Time{}, false
	}
	return time.Unix(stx.Btime.Sec, int64(stx.Btime.Nsec)), true
}

// diskUsage is statfs(2) of dir: the file system's size and the bytes unprivileged users may
// still write (what a full disk is to the store: root's reserve is not the store's).
func diskUsage(dir string) (total, avail int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := int64(st.Bsize) //nolint:unconvert // Bsize is int32 or int64 by architecture.
	return int64(st.Blocks) * bs, int64(st.Bavail) * bs, nil
}
