#!/bin/bash
# dracut module "bootcfs": bootcfs's setup-root (composefs root) for a systemd initramfs.
# Add it with `add_dracutmodules+=" bootcfs "` (dracut.conf.d) or `dracut --add bootcfs`.

# only when asked for (it changes what the root filesystem is)
check() {
    # perl (Debian's perl-base, Essential) runs bootcfs-verity-enable: first-boot fs-verity in one process
    require_binaries fsverity mount umount mountpoint find perl || return 1
    [ -f "$moddir/bootcfs-verity-enable.pl" ] || { derror "bootcfs: $moddir/bootcfs-verity-enable.pl is missing"; return 1; }
    return 255
}

depends() {
    echo systemd-initrd
}

installkernel() {
    # Debian builds these as modules; fs-verity itself is built in (CONFIG_FS_VERITY=y)
    hostonly='' instmods erofs overlay loop ext4
}

install() {
    # perl: only the interpreter and its shared libraries (bootcfs-verity-enable uses no perl modules)
    inst_multiple fsverity mount umount mountpoint find findmnt perl cat mkdir rm sync tail tr ln
    inst_simple "$moddir/bootcfs-lib.sh" /usr/lib/bootcfs/bootcfs-lib.sh
    inst_script "$moddir/bootcfs-setup-root.sh" /usr/lib/bootcfs/bootcfs-setup-root
    inst_script "$moddir/bootcfs-verity-enable.pl" /usr/lib/bootcfs/bootcfs-verity-enable
    inst_simple "$moddir/bootcfs-setup-root.service" "$systemdsystemunitdir/bootcfs-setup-root.service"
    $SYSTEMCTL -q --root "$initdir" enable bootcfs-setup-root.service
}
