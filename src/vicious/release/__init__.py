"""What leaves the user's device: the forms a classifier's outputs take (:mod:`.outputs`)
and the release policies a user applies to them first (:mod:`.policies`; a learned one, the
purifier: :mod:`.purifier`, fitted by :mod:`vicious.defences.purifier`).

Both sit below the attack, because a server that knows the policy trains F and G
through it (``release.policy=...``), and below the defences, which read outputs and
measure what a policy costs."""
