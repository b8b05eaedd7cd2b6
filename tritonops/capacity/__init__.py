"""The capacity planner behind ``tritonops capacity``: replay a request trace against fleets of
several sizes, through the same placement policy ``reconcile`` uses (:mod:`tritonops.placement`),
and price what it takes to serve a target share of requests warm."""
