// Pipeline-parallel cluster: wire protocol, workers and coordinator.
import RWKVX
