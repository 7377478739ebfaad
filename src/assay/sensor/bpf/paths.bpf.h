/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0 */
/*
 * Paths from kernel objects: a dentry walk to an absolute path (crossing mounts), and the file behind an
 * fd. Included once, by sensor.bpf.c, after its maps (it uses the per-CPU `pathbufs`).
 */
#ifndef ASSAY_PATHS_BPF_H
#define ASSAY_PATHS_BPF_H

/* ---- dentry walk: the absolute path of (mnt, dentry), written backwards into a pathbuf ----
 *
 * The helpers below that take a record are *global* functions (not static): the verifier checks each of
 * them once, on its own, instead of once per path through the caller. Without that, the combinations of
 * present/absent/relative strings made the syscall program cost ~900k verifier steps (the limit is 1M) and
 * seconds to load. Kernel pointers cross these calls as u64, which the verifier treats as plain numbers. */
struct walk_ctx {
	struct dentry *d;
	struct mount *mnt;
	struct pathbuf *pb;
	u32 pos;      /* start of the path in pb->b; the path ends at STR_CAP */
	u32 trunc;
};

static long walk_step(u32 i, struct walk_ctx *c)
{
	struct dentry *d = c->d;
	struct mount *m = c->mnt; /* a local: CO-RE must not see walk_ctx, which is not a kernel type */
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(m, mnt.mnt_root);
	struct qstr name;
	u32 len;

	if (d == mnt_root || d == parent) {
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);

		if (d != mnt_root || mp == m || !mp)
			return 1; /* the root of the (namespace's) tree */
		c->d = BPF_CORE_READ(m, mnt_mountpoint);
		c->mnt = mp;
		return 0;
	}
	name = BPF_CORE_READ(d, d_name);
	len = name.len;
	if (len > 255 || c->pos < len + 1) {
		c->trunc = 1;
		return 1;
	}
	c->pos -= len;
	bpf_probe_read_kernel(&c->pb->b[c->pos & (STR_CAP - 1)], len & 255, name.name);
	c->pos -= 1;
	c->pb->b[c->pos & (STR_CAP - 1)] = '/';
	c->d = parent;
	return 0;
}

#define PATH_TRUNC_BIT (1u << 31)
#define PATH_LEN(r) ((r) & (STR_CAP - 1))

/* Room for one path or string, for global functions' pointer arguments (the verifier checks the caller
 * passes this many bytes). */
struct strbuf {
	char b[STR_CAP];
};

/* Superblock magics of the pseudo filesystems whose names are not simple_dname()'s "/name (deleted)". */
#define PIPEFS_MAGIC 0x50495045
#define SOCKFS_MAGIC 0x534F434B
#define ANON_INODE_FS_MAGIC 0x09041934
#define DNAME_CAP 512 /* a d_name is at most 255 bytes; room for the decorations */

/* d_path() of a dentry that belongs to no directory tree (alloc_file_pseudo(): memfd, shmem and SysV shm
 * segments, pipes, sockets, anon inodes). The kernel asks the dentry's d_dname() for these instead of
 * walking; the names below are those of simple_dname(), pipefs_dname(), sockfs_dname() and
 * anon_inodefs_dname(), so the sensor reports what /proc/PID/exe and /proc/PID/fd/N show. */
static __always_inline int dname_into(struct strbuf *dst, struct dentry *d)
{
	u64 magic = BPF_CORE_READ(d, d_sb, s_magic);
	u64 ino = BPF_CORE_READ(d, d_inode, i_ino);
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	long n;

	if (magic == PIPEFS_MAGIC)
		n = BPF_SNPRINTF(dst->b, DNAME_CAP, "pipe:[%lu]", ino);
	else if (magic == SOCKFS_MAGIC)
		n = BPF_SNPRINTF(dst->b, DNAME_CAP, "socket:[%lu]", ino);
	else if (magic == ANON_INODE_FS_MAGIC)
		n = BPF_SNPRINTF(dst->b, DNAME_CAP, "anon_inode:%s", name);
	else
		n = BPF_SNPRINTF(dst->b, DNAME_CAP, "/%s (deleted)", name);
	if (n <= 1)
		return 0;
	return n > DNAME_CAP ? (DNAME_CAP - 1) | PATH_TRUNC_BIT : n - 1;
}

#define DELETED " (deleted)"
#define DELETED_LEN 10

/* Write the path of (vmnt, dentry) into dst; returns its length (no NUL), | PATH_TRUNC_BIT when cut.
 * d_path() semantics: a file with no place in a tree gets its d_dname() name, and an unlinked file (a
 * hashed-out dentry that is not a root) ends with " (deleted)". */
__noinline int path_into(struct strbuf *dst, u64 vmnt, u64 dentry)
{
	u32 zero = 0, len, end = STR_CAP;
	struct walk_ctx c = {};
	struct dentry *d = (struct dentry *)dentry;
	struct dentry *mnt_root;

	if (!dst || !vmnt || !dentry)
		return 0;
	mnt_root = BPF_CORE_READ((struct vfsmount *)vmnt, mnt_root);
	if (BPF_CORE_READ(d, d_parent) == d) {
		if (d != mnt_root && BPF_CORE_READ(d, d_op, d_dname))
			return dname_into(dst, d);
	}
	c.pb = bpf_map_lookup_elem(&pathbufs, &zero);
	if (!c.pb)
		return 0;
	if (BPF_CORE_READ(d, d_parent) != d && !BPF_CORE_READ(d, d_hash.pprev)) {
		/* d_unlinked(): the walk below still finds the name it had */
		end = STR_CAP - DELETED_LEN;
		__builtin_memcpy(&c.pb->b[STR_CAP - DELETED_LEN], DELETED, DELETED_LEN);
	}
	c.d = d;
	c.mnt = (struct mount *)(vmnt - bpf_core_field_offset(struct mount, mnt));
	c.pos = end;
	bpf_loop(WALK_DEPTH, walk_step, &c, 0);
	if (c.pos >= end) { /* the root itself */
		c.pos = end - 1;
		c.pb->b[(end - 1) & (STR_CAP - 1)] = '/';
	}
	len = STR_CAP - c.pos;
	if (len == 0 || len > STR_CAP - 1)
		return 0;
	if (bpf_probe_read_kernel(dst->b, len, &c.pb->b[c.pos & (STR_CAP - 1)]))
		return 0;
	return len | (c.trunc ? PATH_TRUNC_BIT : 0);
}

static __always_inline struct file *fd_file(struct task_struct *t, u64 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds;
	struct file *f = 0;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xfffff]);
	return f;
}

#define AT_FDCWD -100

/* The path of an open fd (AT_FDCWD: the cwd) of the current task, into dst. */
__noinline int fd_path_into(struct strbuf *dst, s64 fd)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct file *f;

	if (fd == AT_FDCWD) {
		struct fs_struct *fs = BPF_CORE_READ(t, fs);

		return path_into(dst, (u64)BPF_CORE_READ(fs, pwd.mnt), (u64)BPF_CORE_READ(fs, pwd.dentry));
	}
	if (fd < 0)
		return 0;
	f = fd_file(t, fd);
	if (!f)
		return 0;
	return path_into(dst, (u64)BPF_CORE_READ(f, f_path.mnt), (u64)BPF_CORE_READ(f, f_path.dentry));
}

#endif /* ASSAY_PATHS_BPF_H */
