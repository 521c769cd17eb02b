"""The folder names of the dataset layout that the readers (`datasets`) and the world's writer (`world`) share."""

UNLABELLED = "_unlabelled"  # a domain's folder of images without a class: `<domain>/_unlabelled/<image>`
