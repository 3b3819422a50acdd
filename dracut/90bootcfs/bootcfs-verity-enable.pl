#!/usr/bin/perl
# bootcfs-verity-enable — first boot after an install that could not enable fs-verity: enables fs-verity on
# every object of a composefs object store and checks that each object's measured digest is its name, in ONE
# process (one open + two ioctls per object; forking `fsverity` per object costs ~75 ms each under QEMU TCG).
#
#   find /sysroot/composefs/objects -type f -print0 |
#     bootcfs-verity-enable --hash-alg=sha512 --objects=/sysroot/composefs/objects [--enable-only=FILE]...
#
# stdin: NUL-separated paths (as `find -print0` writes them), each under --objects. For a path
# OBJECTS/xx/rest (xx two lowercase hex digits):
#   - a name starting with "." is a temporary file of an interrupted write (bootcfs's ".tmp-*"): skipped;
#   - otherwise "xxrest" must be a digest of --hash-alg (64 lowercase hex digits for sha256, 128 for sha512)
#     or the program refuses it (an object store holds nothing else there);
#   - the file is opened read-only, FS_IOC_ENABLE_VERITY enables fs-verity (4096-byte blocks, no salt, no
#     signature; EEXIST = it already has fs-verity, e.g. an earlier first boot was interrupted: fine, the
#     measurement decides), FS_IOC_MEASURE_VERITY measures it, and algorithm + digest must equal the name.
# Paths elsewhere under OBJECTS (not in a two-hex-digit directory) are not objects and are skipped.
# --enable-only=FILE (repeatable): enable fs-verity on FILE too and check the algorithm, but there is no name
# to compare the digest with: composefs/meta.json (a repository is secure when meta.json has fs-verity) and
# the image if it is not itself an object (its digest is checked against composefs= by the caller).
# Success: one line on stdout, "<N> objects checked (<E> already had fs-verity), <S> skipped, <F> other files",
# exit 0. Any error: one line on stderr, "bootcfs-verity-enable: <what>" naming the file (and the errno), and
# exit 1 at the first error (2 for a usage error). Nothing is printed on stdout then.
#
# Why enabling fs-verity here is not a trust decision: the signed UKI's command line pins the image digest
# (composefs=), the image pins every object's fs-verity digest, and overlayfs verity=require compares them on
# every open. Enabling verity only makes the kernel able to measure. Each object is also checked against its
# name here, so an object altered on disk before this first boot (when nothing could measure it) is refused
# now, with its name, instead of failing later at read time; an object whose name is not a digest is refused.
# The image itself is checked by the caller against composefs= before it is mounted.
#
# Only perl's builtins (open, ioctl, pack/unpack, stat): no modules, so an initramfs needs /usr/bin/perl and
# its shared libraries only. Errno numbers are Linux's generic ones (x86_64, arm64, riscv64 ...) since the
# Errno module is not used.
$| = 1;

my $FS_IOC_ENABLE_VERITY  = 0x40806685;    # _IOW('f', 133, struct fsverity_enable_arg), 128 bytes
my $FS_IOC_MEASURE_VERITY = 0xC0046686;    # _IOWR('f', 134, struct fsverity_digest), 4-byte header
my $EEXIST = 17;
my %ALGS = (sha256 => [1, 32], sha512 => [2, 64]);    # name => [FS_VERITY_HASH_ALG_*, digest bytes]
my %ALG_NAME = (1 => 'sha256', 2 => 'sha512');

sub fail {
    print STDERR "bootcfs-verity-enable: $_[0]\n";
    exit 1;
}

sub usage {
    print STDERR "bootcfs-verity-enable: $_[0]\n",
      "usage: bootcfs-verity-enable --hash-alg=sha256|sha512 --objects=DIR [--enable-only=FILE]... < NUL-separated paths\n";
    exit 2;
}

sub errstr { my ($e) = @_; return "$e (errno " . ($e + 0) . ")"; }

my ($alg, $objects, @enable_only);
for my $a (@ARGV) {
    if ($a =~ /\A--hash-alg=(.*)\z/s) { $alg = $1; }
    elsif ($a =~ /\A--objects=(.+)\z/s) { $objects = $1; }
    elsif ($a =~ /\A--enable-only=(.+)\z/s) { push @enable_only, $1; }
    else { usage("unknown argument '$a'"); }
}
usage('--hash-alg is required') unless defined $alg;
usage("unsupported --hash-alg '$alg' (sha256 or sha512)") unless $ALGS{$alg};
usage('--objects is required') unless defined $objects;
$objects =~ s{/+\z}{};
my ($alg_id, $digest_bytes) = @{ $ALGS{$alg} };
my $hex_len = 2 * $digest_bytes;

# struct fsverity_enable_arg: u32 version, u32 hash_algorithm, u32 block_size, u32 salt_size, u64 salt_ptr,
# u32 sig_size, u32 reserved1, u64 sig_ptr, u64 reserved2[11]
my $enable_arg = pack('L L L L Q L L Q', 1, $alg_id, 4096, 0, 0, 0, 0, 0) . ("\0" x 88);
length($enable_arg) == 128 or fail('internal: fsverity_enable_arg is not 128 bytes');

# Enables fs-verity on PATH (WHAT names it in messages; FOLLOW: follow a symbolic link, as for the image,
# which is usually a link into objects/); returns ("<alg name>:<hex digest>", already) where already is 1 when
# the file had fs-verity before. The file opened is the one checked (same device and inode as stat'ed).
sub enable_and_measure {
    my ($path, $what, $follow) = @_;
    my @l = ($follow ? stat($path) : lstat($path)) or fail("$what: cannot stat: " . errstr($!));
    -f _ or fail("$what: not a regular file");
    open(my $fh, '<', $path) or fail("$what: cannot open read-only: " . errstr($!));
    my @s = stat($fh) or fail("$what: cannot stat the open file: " . errstr($!));
    ($s[0] == $l[0] && $s[1] == $l[1]) or fail("$what: replaced while it was being opened");
    my $already = 0;
    my $arg = $enable_arg;
    if (!ioctl($fh, $FS_IOC_ENABLE_VERITY, $arg)) {
        my $e = $!;
        if ($e + 0 == $EEXIST) { $already = 1; }
        else { fail("$what: cannot enable fs-verity (FS_IOC_ENABLE_VERITY): " . errstr($e)); }
    }
    # struct fsverity_digest: u16 digest_algorithm, u16 digest_size (in: buffer size, out: digest size), u8 digest[]
    my $m = pack('S S', 0, 64) . ("\0" x 64);
    ioctl($fh, $FS_IOC_MEASURE_VERITY, $m) or fail("$what: cannot measure fs-verity (FS_IOC_MEASURE_VERITY): " . errstr($!));
    close($fh);
    my ($got_alg, $size) = unpack('S S', $m);
    my $name = $ALG_NAME{$got_alg} // "algorithm-$got_alg";
    ($size >= 1 && $size <= 64) or fail("$what: FS_IOC_MEASURE_VERITY returned a digest of $size bytes");
    return ($name . ':' . unpack('H*', substr($m, 4, $size)), $already);
}

my ($checked, $already, $skipped, $other) = (0, 0, 0, 0);

for my $f (@enable_only) {
    my ($d) = enable_and_measure($f, $f, 1);
    $d =~ /\A\Q$alg\E:[0-9a-f]{$hex_len}\z/ or fail("$f: has fs-verity $d, not $alg (was it enabled with another algorithm?)");
    $other++;
}

{
    local $/ = "\0";
    while (defined(my $p = <STDIN>)) {
        chomp $p;
        next if $p eq '';
        substr($p, 0, length($objects) + 1) eq "$objects/"
          or fail("$p: not under the object directory $objects");
        my $rel = substr($p, length($objects) + 1);
        # objects are OBJECTS/xx/rest; anything else (files directly in OBJECTS, other directories) is not one
        if ($rel !~ m{\A([0-9a-f]{2})/([^/]+)\z}) { $skipped++; next; }
        my ($dir, $base) = ($1, $2);
        if (substr($base, 0, 1) eq '.') { $skipped++; next; }    # temporary file of an interrupted write
        my $name = $dir . $base;
        ($name =~ /\A[0-9a-f]+\z/ && length($name) == $hex_len)
          or fail("object $rel: its name is not a $alg digest ($hex_len lowercase hex digits); refusing an object store with foreign files");
        my ($d, $was) = enable_and_measure($p, "object $rel", 0);
        $d eq "$alg:$name" or fail("object $rel does not match its name: measured $d (altered before fs-verity was enabled?)");
        $checked++;
        $already += $was;
    }
}

print "$checked objects checked ($already already had fs-verity), $skipped skipped, $other other files\n";
exit 0;
