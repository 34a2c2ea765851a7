"""Rating and charging: tariffs, cost, balances, CDRs."""
