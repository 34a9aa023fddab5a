"""HTTP control plane: Falcon resources served by waitress in the appliance process."""
