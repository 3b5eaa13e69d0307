"""Traffic control: who a client is, the fleet-wide rate limit, the concurrency cap, the response cache."""
