"""``python -m clickstream.synthetic``: the realism table (:mod:`.realism`)."""

from clickstream.synthetic.realism import main

main()
