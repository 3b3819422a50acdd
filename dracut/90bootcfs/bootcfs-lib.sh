# bootcfs-lib.sh — functions of bootcfs's setup-root that are also run by the unit tests on the host.
# POSIX sh (dash, bash, busybox sh). Sourced; defines functions only.

# bootcfs_parse_cmdline CMDLINE
#   Finds the LAST `composefs=` argument of a kernel command line (as the kernel and systemd do: a later
#   argument overrides an earlier one) and validates it. The line is split on blanks only: no echo, no
#   backslash processing (systemd-boot prepends `initrd=\EFI\...`), no globbing.
#   On success sets BOOTCFS_DIGEST (64 or 128 lowercase hex) and BOOTCFS_INSECURE (y for `composefs=?<hex>`,
#   i.e. no fs-verity required) and returns 0. Returns 1 when there is no composefs= argument and 2 when
#   the last one is invalid; BOOTCFS_ERROR then says why.
bootcfs_parse_cmdline() {
  BOOTCFS_DIGEST=''; BOOTCFS_INSECURE=n; BOOTCFS_ERROR=''
  _bc_last=''; _bc_found=n
  _bc_oldifs=$IFS
  _bc_noglob=n
  case $- in *f*) _bc_noglob=y ;; esac
  set -f
  IFS=' 	
'
  for _bc_arg in $1; do
    case $_bc_arg in
      composefs=*) _bc_last=${_bc_arg#composefs=}; _bc_found=y ;;
      *composefs=*)
        # a quoted or otherwise decorated composefs= would be read differently by the kernel and by us
        case $_bc_arg in *'"'*) _bc_last='"'; _bc_found=y ;; esac ;;
    esac
  done
  IFS=$_bc_oldifs
  [ "$_bc_noglob" = y ] || set +f
  if [ "$_bc_found" = n ]; then BOOTCFS_ERROR='no composefs= argument on the kernel command line'; return 1; fi
  case $_bc_last in
    '"') BOOTCFS_ERROR='a quoted composefs= argument is not supported'; return 2 ;;
    \?*) BOOTCFS_INSECURE=y; _bc_last=${_bc_last#\?} ;;
  esac
  case $_bc_last in
    '') BOOTCFS_ERROR='composefs= has an empty digest'; return 2 ;;
    *[!0-9a-f]*) BOOTCFS_ERROR='composefs= digest is not lowercase hexadecimal'; return 2 ;;
  esac
  case ${#_bc_last} in
    64|128) ;;
    *) BOOTCFS_ERROR="composefs= digest has ${#_bc_last} hex digits (want 64 for sha256 or 128 for sha512)"; return 2 ;;
  esac
  BOOTCFS_DIGEST=$_bc_last
  return 0
}

# bootcfs_verity_algorithm DIGEST -> prints sha256 or sha512 (by length)
bootcfs_verity_algorithm() {
  case ${#1} in 64) printf 'sha256\n' ;; 128) printf 'sha512\n' ;; *) return 1 ;; esac
}

# bootcfs_parse_measure LINE -> prints "<alg> <hex>" from `fsverity measure` output ("sha512:<hex> <path>")
bootcfs_parse_measure() {
  _bc_m=${1%% *}
  case $_bc_m in
    sha256:*|sha512:*) printf '%s %s\n' "${_bc_m%%:*}" "${_bc_m#*:}" ;;
    *) return 1 ;;
  esac
}

# bootcfs_object_digest_from_path REL -> the digest an object's path encodes ("xx/rest" -> "xxrest")
bootcfs_object_digest_from_path() {
  _bc_d=${1%/*}; _bc_r=${1##*/}
  _bc_d=${_bc_d##*/}
  printf '%s%s\n' "$_bc_d" "$_bc_r"
}
