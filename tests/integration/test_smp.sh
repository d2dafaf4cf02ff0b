#!/bin/bash
# A guest with 2 vCPUs under TCG (-accel tcg,thread=multi: one host thread
# per vCPU, so both write guest RAM at once): test_replica_exact.sh, a
# byte-exact replica after a planned failover and a SIGKILL failover with
# the counter going on, with TEST_SMP=2. (KVM guests with 2 vCPUs:
# test_kvm.sh.)
TEST_SMP=2 exec bash "$(dirname "$0")/test_replica_exact.sh"
