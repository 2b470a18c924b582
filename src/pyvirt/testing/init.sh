#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# /init (pid 1) of pyvirt's test guest, run by busybox ash from the initramfs.
# pyvirt.testing.guest fills in the @...@ placeholders; the rendered text is part of the cache key.
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts

kver=$(uname -r)
# The builder listed the modules in dependency order, so plain insmod is enough and no module
# index has to be read at boot. A failure must not stop the boot: a missing device only matters to
# the test that needs it.
while read -r mod; do
    insmod "/lib/modules/$kver/$mod" || echo "PYVIRT-GUEST: insmod $mod failed"
done < "/lib/modules/$kver/@LOAD_LIST@"

# acpid turns the ACPI power button (QMP system_powerdown) into /etc/acpi/PWRF/00000080.
# It needs button.ko + evdev.ko loaded above and an existing /var/log. It opens the input devices
# only once running, and a button pressed before that is lost: so the ready marker waits (at most
# 5 s) until acpid holds every /dev/input/event*.
acpid -f &
acpid_pid=$!
want=$(ls /dev/input 2>/dev/null | grep -c '^event')
tries=0
while [ "$(ls -l "/proc/$acpid_pid/fd" 2>/dev/null | grep -c /dev/input/event)" -lt "$want" ] &&
      [ "$tries" -lt 500 ]; do
    usleep 10000
    tries=$((tries + 1))
done

# pyvirt.show_disk=vda (repeatable) prints the first 64 bytes of /dev/vda, all but letters, digits,
# '_' and '-' as '.' (busybox tr has no working -c with classes), before the ready marker: for tests
# of disks the guest must see and read.
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pyvirt.show_disk=*) d=${arg#pyvirt.show_disk=}
            echo "PYVIRT-DISK $d: $(head -c 64 "/dev/$d" 2>&1 | tr -c 'A-Za-z0-9_-' '.')" ;;
    esac
done

echo "@READY_MARKER@"

# pyvirt.dhcp=eth0 asks for a DHCP lease on eth0 once ready (busybox udhcpc, in the background),
# configures the address and prints "PYVIRT-DHCP eth0 ADDRESS": tests of virtual networks.
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        pyvirt.dhcp=*) ifc=${arg#pyvirt.dhcp=}
            mkdir -p /tmp
            printf '#!/bin/sh\n[ "$1" = bound ] || exit 0\nifconfig "$interface" "$ip" netmask "$subnet"\necho "PYVIRT-DHCP $interface $ip"\n' > /tmp/dhcp.sh
            chmod 0755 /tmp/dhcp.sh
            ifconfig "$ifc" up
            udhcpc -i "$ifc" -s /tmp/dhcp.sh -q -n -t 30 -T 1 >/dev/console 2>&1 & ;;
    esac
done

# Tests make the guest act once it is ready through its kernel command line (no shell session is
# needed): pyvirt.after_ready=panic panics the kernel (pvpanic reports it to QEMU), =reboot reboots,
# =suspend suspends to RAM (ACPI S3), and says so if it ever resumes.
case " $(cat /proc/cmdline) " in
    *" pyvirt.after_ready=panic "*) echo c > /proc/sysrq-trigger ;;
    *" pyvirt.after_ready=reboot "*) reboot -f ;;
    *" pyvirt.after_ready=suspend "*) echo mem > /sys/power/state && echo "PYVIRT-GUEST-RESUMED" ;;
esac

export PS1='@PROMPT@'
export HOME=/root
# pid 1 must never exit (the kernel would panic), so a shell that exits is simply restarted.
# setsid + cttyhack give the shell ttyS0 as controlling terminal, so ^C works.
# No init daemon runs: `reboot -f` resets the machine (QEMU then boots the guest again) and
# `poweroff -f` turns it off; without -f, busybox would only signal this script, which ignores it.
while :; do
    setsid cttyhack sh
done
