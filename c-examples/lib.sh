# Shared by demo.sh and ctest.sh (sourced, not run).

# Stop and reap every process whose pid is in the array `pids`, then empty it.
stop_children() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    pids=()
}
