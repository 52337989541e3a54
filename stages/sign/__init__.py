"""Sign/encrypt stage: ocicrypt layer encryption, keys in the KBS, cosign signatures, DSSE."""
