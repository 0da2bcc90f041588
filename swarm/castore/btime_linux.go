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

// diskUsage is statfs(2) of dir as df's Use% reads it: total is the bytes in use plus those
// unprivileged users may still write, avail the latter. Root's reserve is not the store's to
// fill, and neither are blocks that are neither free nor available (a thin-provisioned or
// quota-limited volume: one here reported 252 GiB, 34 GiB used and 58 GiB available); counting
// those as used put an unremarkable disk at 77% and a watermark of 90% within reach of a
// test run.
func diskUsage(dir string) (total, avail int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	bs := int64(st.Bsize) //nolint:unconvert // Bsize is int32 or int64 by architecture.
	used := (int64(st.Blocks) - int64(st.Bfree)) * bs
	avail = int64(st.Bavail) * bs
	return used + avail, avail, nil
}
